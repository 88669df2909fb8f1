"""The packages of facelab depend one way (tools/check_layers.py), and the check catches what breaks that."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "check_layers.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_layers", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_source_tree_keeps_its_layers():
    problems = _tool().problems(REPO / "src" / "facelab")
    assert problems == [], "\n".join(problems)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A minimal facelab tree: every package of the layers, plus ``files`` (path -> source)."""
    root = tmp_path / "facelab"
    for layer in _tool().LAYERS:
        for name in layer:
            if name == "__main__":
                (root / "__main__.py").parent.mkdir(parents=True, exist_ok=True)
                (root / "__main__.py").write_text("")
                continue
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    for rel, source in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(source))
    return root


@pytest.mark.parametrize("source", [
    "from facelab.train.trainer import Trainer\n",
    "import facelab.train.trainer\n",
    "def load():\n    from facelab.train import trainer  # hidden in a function: still a dependency\n",
    "class A:\n    def f(self):\n        import facelab.train\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from facelab.train.trainer import Trainer\n",
    "from ..train import trainer\n",
    "def f():\n    from .. import train\n",
    "import importlib\nmodel = importlib.import_module('facelab.train.trainer')\n",
])
def test_a_lower_package_importing_a_higher_one_fails(tmp_path, source):
    root = _package(tmp_path, {"data/loader.py": source})
    problems = _tool().problems(root)
    assert len(problems) == 1 and "data imports train, up" in problems[0]
    assert f"{root / 'data' / 'loader.py'}:" in problems[0]  # the file and line to fix
    run = subprocess.run([sys.executable, str(TOOL), str(root)], capture_output=True, text=True)
    assert run.returncode == 1 and "data imports train" in run.stdout


def test_downward_imports_pass_and_sideways_ones_fail(tmp_path):
    root = _package(tmp_path, {"train/loop.py": "from facelab.eval import metrics\nfrom ..data import store\n"})
    assert _tool().problems(root) == []
    assert subprocess.run([sys.executable, str(TOOL), str(root)], capture_output=True).returncode == 0
    root = _package(tmp_path / "b", {"train/loop.py": "def f():\n    from facelab.serve import app\n"})
    assert [p for p in _tool().problems(root) if "train imports serve, sideways" in p]


def test_a_package_no_layer_names_fails(tmp_path):
    root = _package(tmp_path, {"plugins/__init__.py": "", "plugins/x.py": "from facelab.data import store\n"})
    assert any(p.startswith("plugins: not in any layer") for p in _tool().problems(root))
