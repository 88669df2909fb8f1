"""The sweep specs shipped in benchmarks/sweeps/ name fields their command's config has, with values it takes
(what `facelab sweep run SPEC --dry-run` checks, without the store and pretrained run they are given on the
command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facelab.sweeps import load_spec, prepare_spec

SPECS = sorted((Path(__file__).resolve().parents[3] / "benchmarks" / "sweeps").glob("*.yaml"))


def test_there_are_specs_to_check() -> None:
    assert len(SPECS) >= 2


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_a_shipped_spec_is_valid_for_its_command(path: Path) -> None:
    resolved = prepare_spec(load_spec(path), check_command=False)  # raises ConfigError naming what is wrong
    assert resolved.metric and set(resolved.space) == set(load_spec(path).space)
