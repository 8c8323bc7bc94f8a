"""A stage's code dependencies: the repository modules its script imports, transitively.

Read from the source with :mod:`ast` (every ``import``, also those inside functions), never by
running it. Only the packages of this repository count; imports the code makes by name at run
time (the purifier and dataset registries') are not followed, so each stage adds the defense and
dataset modules it runs.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("repurify", "stages")


def module_file(module: str) -> str | None:
    """The repository file of ``module`` (relative, POSIX), or None outside the repository."""
    if module.split(".")[0] in PACKAGES:
        base = ROOT.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.relative_to(ROOT).as_posix()
        return None
    spec = importlib.util.find_spec(module)  # a plugin: tracked where it lives in the repository
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    return origin.relative_to(ROOT).as_posix() if origin and origin.is_relative_to(ROOT) else None


def _imported(file: str) -> list[str]:
    """The modules ``file`` names in its imports (parent packages included, as Python runs them)."""
    tree = ast.parse((ROOT / file).read_text(encoding="utf-8"), file)
    package = file.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    if not file.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names += [base, *(f"{base}.{a.name}" for a in node.names)]
    out: list[str] = []
    for name in names:
        parts = name.split(".")
        out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in dict.fromkeys(out) if m.split(".")[0] in PACKAGES]


@cache
def _closure(file: str) -> frozenset[str]:
    seen, todo = {file}, [file]
    while todo:
        for module in _imported(todo.pop()):
            dep = module_file(module)
            if dep and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return frozenset(seen)


def closure(*files: str) -> list[str]:
    """``files`` and every repository file they import, transitively, sorted."""
    return sorted(set().union(*(_closure(f) for f in files)))
