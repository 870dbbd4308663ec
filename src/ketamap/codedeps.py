"""Which files a workflow step's results depend on, derived from its imports (never hand-kept).

A rule's ``code`` input is the step's entry modules and every ``ketamap`` module they import,
directly or through each other, at module level or inside a function, plus the contract files
(``schemas/*.yaml``) those modules declare they read in a module-level ``CONTRACTS`` tuple. Editing
any of them reruns the rule; editing a module the step never imports does not.

The imports are read with :mod:`ast`, not executed: planning the workflow imports nothing of the
steps. An entry names a module the way the workflow's registries do (``ketamap.harmonize.pet``);
registries that choose a module at run time name it as a string, which this scan does not follow,
so a registry adds one modality's package to one rule, not every modality's to every rule.
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "ketamap"


def source_root() -> Path:
    """The ``ketamap`` sources the workflow runs: ``src/ketamap`` of the workflow folder when there
    is one (a checkout; paths stay relative, as Snakemake prefers), else the installed package."""
    local = Path("src") / PACKAGE
    if (local / "__init__.py").is_file():
        return local
    return Path(str(importlib.resources.files(PACKAGE)))


def contract_root() -> Path:
    """The contract files: ``schemas/`` of the workflow folder, else the installed copies."""
    local = Path("schemas")
    if local.is_dir():
        return local
    from ketamap.paths import schema_dir

    return schema_dir()


def module_file(module: str, root: Path | None = None) -> Path | None:
    """The source file of ``module`` (a package's ``__init__.py``), or None if it is not one."""
    root = root or source_root()
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


@functools.cache
def _scan(path: Path) -> tuple[frozenset[str], tuple[str, ...]]:
    """The ``ketamap`` modules a source file names in its imports, and its ``CONTRACTS``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path)
    names: set[str] = set()
    contracts: tuple[str, ...] = ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            if base and base.split(".")[0] == PACKAGE:
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)  # may be submodules
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "CONTRACTS" for t in node.targets)
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            contracts = tuple(ast.literal_eval(node.value))
    return frozenset(names), contracts


def _package_of(path: Path) -> str:
    """The package a source file belongs to (for a package's ``__init__.py``, the package)."""
    parts = list(path.parent.parts)
    return ".".join(parts[len(parts) - 1 - parts[::-1].index(PACKAGE) :])


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    if node.level == 0:
        return node.module
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: -(node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def closure(entries: Iterable[str], root: Path | None = None) -> list[Path]:
    """Source files of ``entries`` and of every ``ketamap`` module they import, transitively
    (with the ``__init__.py`` of every package on the way, which Python runs too)."""
    root = root or source_root()
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # parents first: importing a.b.c runs a and a.b
            name = ".".join(parts[:i])
            if name in seen:
                continue
            path = module_file(name, root)
            if path is None:
                continue  # an attribute imported from a module, not a module
            seen[name] = path
            todo.extend(_scan(path.resolve())[0])
    return sorted(set(seen.values()))


def step_code(*entries: str) -> list[str]:
    """The ``code`` input of a rule whose step runs ``entries``: their source closure and the
    contract files it declares, as paths for Snakemake (relative inside a checkout)."""
    root = source_root()
    files = closure(entries, root)
    contracts = sorted({c for f in files for c in _scan(f.resolve())[1]})
    schemas = contract_root()
    return [str(f) for f in files] + [str(schemas / c) for c in contracts]
