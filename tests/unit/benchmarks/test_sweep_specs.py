"""The sweep specs shipped in benchmarks/sweeps/ name fields their command's config has, with values it takes
(no store, no training: what `facelab sweep run SPEC --dry-run` checks before it opens the store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facelab.sweeps.commands import COMMANDS
from facelab.sweeps.space import probe_values, trial_config
from facelab.sweeps.spec import load_spec
from facelab.sweeps.validate import check_algorithms, check_enqueued, check_field

SPECS = sorted((Path(__file__).resolve().parents[3] / "benchmarks" / "sweeps").glob("*.yaml"))


def test_there_are_specs_to_check() -> None:
    assert len(SPECS) >= 2


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_a_shipped_spec_is_valid_for_its_command(path: Path) -> None:
    spec = load_spec(path)
    command = COMMANDS.get(spec.command)
    base = command.config_cls.from_dict(spec.base, where=f"{path.name}: base")
    for name in spec.space:
        check_field(base, name, command=spec.command)
    check_enqueued(spec)
    check_algorithms(spec)
    for values in spec.enqueue:  # every enqueued trial and every probe value builds a config
        trial_config(spec, values, where=f"{path.name}: enqueued {values}")
    for name, param in spec.space.items():
        for value in probe_values(param):
            node = trial_config(spec, {name: value}, where=f"{path.name}: {name}={value!r}").model_dump()
            for part in name.split("."):
                node = node[part]
            assert node == value, f"{path.name}: {name}={value!r} arrived as {node!r}"
