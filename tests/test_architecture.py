"""The package's import rules that import-linter cannot state.

import-linter (``lint-imports``, contracts in pyproject.toml) checks the layers
and that there is no cycle. This test checks the other half of the rule in
docs/architecture.md: no module uses another module's leading-underscore name,
whether by ``from m import _name`` or by ``m._name``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import entropic

PACKAGE = Path(entropic.__file__).parent


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:
        return False


# Public names of other libraries that happen to start with an underscore
# (SQLAlchemy's Row._mapping, namedtuple's _asdict, ...).
LIBRARY_NAMES = {"_mapping", "_fields", "_asdict", "_replace", "_make", "_exit"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, module: str) -> list[str]:
    """Each use in ``source`` (the text of ``module``) of another module's private name."""
    found: list[str] = []
    package = module.rpartition(".")[0]
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, base] if base else parts)
            if not base.startswith("entropic"):
                continue
            for alias in node.names:
                # A private *module* (entropic._storage, entropic._core) is a
                # package-internal unit and may be imported; a private name
                # defined inside another module may not.
                if _private(alias.name) and not _is_module(f"{base}.{alias.name}"):
                    found.append(f"line {node.lineno}: from {base} import {alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in LIBRARY_NAMES
        ):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                continue
            found.append(f"line {node.lineno}: .{node.attr} in {module or package}")
    return found


def package_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append((".".join(parts), path))
    return modules


def test_the_checker_finds_private_names() -> None:
    source = (
        "from entropic.store import _Schema\n"
        "from .index import _generic_upsert\n"
        "from entropic import _storage\n"
        "import entropic\n"
        "x = store._persist_batch\n"
        "y = self._engine\n"
    )
    found = private_uses(source, "entropic._storage.claims")
    assert found == [
        "line 1: from entropic.store import _Schema",
        "line 2: from entropic._storage.index import _generic_upsert",
        "line 5: ._persist_batch in entropic._storage.claims",
    ]


def test_no_module_uses_another_modules_private_names() -> None:
    modules = package_modules()
    assert len(modules) > 20, "the package was not found"
    problems = {
        name: uses
        for name, path in modules
        if (uses := private_uses(path.read_text(encoding="utf-8"), name))
    }
    assert problems == {}
