#!/usr/bin/env python3
"""Check that facelab's packages depend one way: a package imports only packages of lower layers.

Usage (from the repository root):  python3 tools/check_layers.py [src/facelab] [--graph]

Every import counts, wherever it is written: at module level, inside a function or a class, under
``if TYPE_CHECKING:``, relative (``from ..eval import x``) or through ``importlib.import_module("facelab.x")``
with a literal name. An import hidden inside a function is still a dependency. Prints each import that points
up (or sideways, between two packages of one layer) with its file and line, and each package that no layer
names; exits 1 when there is any. ``--graph`` also prints the whole import graph between packages.
``tests/unit/test_layers.py`` runs this check on the source tree.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

#: lowest first; a package may import the packages of the layers below its own, never its own layer's others
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("registry", "utils"),
    ("config",),
    ("faces",),
    ("data",),
    ("runs",),
    ("report",),
    ("models",),
    ("deploy",),
    ("eval",),
    ("serve", "train", "labelers"),
    ("experiments", "sweeps"),
    ("cli",),
    ("__main__",),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


@dataclass(frozen=True)
class Import:
    """One import of package ``target`` by a module of package ``source``."""

    source: str
    target: str
    where: str  # file:line


def _module_parts(path: Path, root: Path) -> list[str]:
    rel = path.relative_to(root.parent).with_suffix("")
    return list(rel.parts)


def _package_of(parts: list[str], top: str) -> str | None:
    """The top-level package (or module) of ``top`` that a dotted module path falls in."""
    return parts[1] if len(parts) > 1 and parts[0] == top else None


def _imported(node: ast.AST, me: list[str], is_package: bool) -> list[list[str]]:
    """The dotted module paths an import node brings in (relative ones resolved against ``me``)."""
    if isinstance(node, ast.Import):
        return [a.name.split(".") for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            return [node.module.split(".")] if node.module else []
        package = me if is_package else me[:-1]
        base = package[:len(package) - (node.level - 1)]
        if node.module:
            return [base + node.module.split(".")]
        return [base + [a.name] for a in node.names]  # from .. import eval
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value.split(".")]
    return []


def imports(root: Path) -> list[Import]:
    """Every import between two different top-level packages of the package at ``root``."""
    top = root.name
    found = []
    for path in sorted(root.rglob("*.py")):
        me = _module_parts(path, root)
        source = _package_of(me, top)
        if source is None or source == "__init__":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for parts in _imported(node, me, path.name == "__init__.py"):
                target = _package_of(parts, top)
                if target and target != source:
                    found.append(Import(source, target, f"{path}:{node.lineno}"))  # type: ignore[attr-defined]
    return found


def problems(root: Path) -> list[str]:
    """What breaks the layers: an upward or sideways import, or a package no layer names."""
    out = []
    found = imports(root)
    unplaced = sorted({i.source for i in found} | {i.target for i in found} | _packages(root))
    for name in unplaced:
        if name not in RANK:
            out.append(f"{name}: not in any layer; add it to LAYERS in tools/check_layers.py (and the README's layout)")
    for i in found:
        if i.source in RANK and i.target in RANK and RANK[i.target] >= RANK[i.source]:
            how = "up" if RANK[i.target] > RANK[i.source] else "sideways (same layer)"
            out.append(f"{i.where}: {i.source} imports {i.target}, {how}: {i.source} may import only "
                       f"{', '.join(n for layer in LAYERS[:RANK[i.source]] for n in layer)}")
    return out


def _packages(root: Path) -> set[str]:
    """The top-level packages and modules of ``root`` (``facelab.__init__`` itself aside)."""
    names = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    names |= {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    return names


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0] if args else "src/facelab")
    if not (root / "__init__.py").is_file():
        print(f"{root}: not a Python package; give the package folder, e.g. src/facelab", file=sys.stderr)
        return 2
    if "--graph" in argv:
        graph: dict[str, set[str]] = {}
        for i in imports(root):
            graph.setdefault(i.source, set()).add(i.target)
        for name in sorted(graph, key=lambda n: (RANK.get(n, len(LAYERS)), n)):
            print(f"{name} -> {', '.join(sorted(graph[name]))}")
    found = problems(root)
    for line in found:
        print(line)
    order = " <- ".join(", ".join(layer) for layer in LAYERS)
    print(f"\n{len(found)} problem(s); layers: {order}" if found else f"\nlayers hold: {order}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
