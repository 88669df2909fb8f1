"""``python -m facelab``: the ``facelab`` command, for launchers that start modules (``torchrun -m facelab``)."""

from facelab.cli import main

if __name__ == "__main__":
    main()
