"""``make test`` shows the seed of its random order (addopts' ``-q`` hides pytest-randomly's own header line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/unit/test_layers.py::test_a_package_no_layer_names_fails"


def _pytest(*args: str) -> list[str]:
    """Run pytest as ``make test`` does (the repository's addopts, no -q of its own); its output lines."""
    run = subprocess.run([sys.executable, "-m", "pytest", ONE_TEST, "-p", "no:cacheprovider", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.splitlines()


def test_the_seed_is_the_first_line_and_beside_the_summary_with_its_replay_command():
    lines = _pytest("--randomly-seed=4242")
    expected = 'random test order, seed 4242; replay it: make test PYTEST_ARGS="--randomly-seed=4242"'
    assert lines[0] == expected
    assert lines[-2] == expected and lines[-1].startswith("1 passed")


def test_no_seed_line_without_a_random_order(pytestconfig, monkeypatch):
    from tests.random_order import seed_line

    monkeypatch.setattr(pytestconfig.pluginmanager, "hasplugin", lambda name: name != "randomly")  # -p no:randomly
    assert seed_line(pytestconfig) is None
