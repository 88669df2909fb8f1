"""``python -m facelab.cli``: the ``facelab`` command (sweep workers and benchmarks start it so)."""

from facelab.cli import main

if __name__ == "__main__":
    main()
