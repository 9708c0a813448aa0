"""dvc.yaml declares what each stage runs: its script and every birdclef module the script imports, followed
statically through the library (function-level imports included), so editing any of them reruns the stage."""

from __future__ import annotations

import ast
import re
import sys
from collections import deque
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

NOT_RESULTS = {"birdclef.track": "MLflow recording, provenance and reports: it records runs, never changes an output"}
"""Packages a stage may import without declaring them (what they do cannot change the stage's outputs)."""


def _stages() -> dict[str, dict]:
    """Stage name -> its definition (a ``foreach`` stage: its ``do`` template)."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    return {name: stage.get("do", stage) for name, stage in doc["stages"].items()}


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _scripts(stage: dict) -> list[str]:
    return re.findall(r"\bstages/\w+\.py\b", stage["cmd"])


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def module_file(name: str) -> Path | None:
    """The source file of a birdclef module (a package: its ``__init__.py``), None when it is no module."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path, package: str) -> set[str]:
    """birdclef modules one file imports anywhere in its body (``package``: its own, for relative imports).

    ``from birdclef.x import y`` counts ``birdclef.x`` and, when ``y`` is a submodule, ``birdclef.x.y``; a module
    counts its parent packages (Python runs their ``__init__.py`` first).
    """
    out: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names = [base] + [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")]
        else:
            continue
        for name in names:
            if name == "birdclef" or name.startswith("birdclef."):
                parts = name.split(".")
                out.update(".".join(parts[: i + 1]) for i in range(len(parts)) if module_file(".".join(parts[: i + 1])))
    return out


def _exempt(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in NOT_RESULTS)


def _reexports_only(path: Path) -> bool:
    """A package ``__init__.py`` holding only a docstring, imports and ``__all__`` (no code of its own)."""
    if path.name != "__init__.py":
        return False
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            continue
        return False
    return True


def stage_closure(script: Path) -> dict[str, str]:
    """Every birdclef module a stage script runs, transitively: module -> the module that first imports it."""
    seen: dict[str, str] = {}
    todo = deque((m, script.name) for m in sorted(imported_modules(script, "")))
    while todo:  # breadth first: a module's importer is the one nearest the script
        name, by = todo.popleft()
        if name in seen or _exempt(name):
            continue
        seen[name] = by
        path = module_file(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += [(m, name) for m in sorted(imported_modules(path, package))]
    return seen


def undeclared(stage: dict) -> list[str]:
    """Files a stage runs that no dep covers (the file itself or a folder above it), with who imports them."""
    deps = [Path(d) for d in _deps(stage)]
    out = [f"{s} (the stage's script)" for s in _scripts(stage) if Path(s) not in deps]
    for script in _scripts(stage):
        for name, by in sorted(stage_closure(REPO / script).items()):
            path = module_file(name)
            rel = path.relative_to(REPO)
            if _reexports_only(path) or any(rel == d or d in rel.parents for d in deps):
                continue
            out.append(f"{rel} (imported by {by})")
    return out


STAGES = _stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_declared_dep(name):
    missing = undeclared(STAGES[name])
    assert not missing, f"dvc.yaml stage {name!r} runs code it does not list in deps:\n  " + "\n  ".join(missing)


def test_every_stage_runs_a_script():
    assert all(_scripts(stage) for stage in STAGES.values())


# ---------------------------------------------------------------- the analysis itself


def _tree(tmp_path: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)


def test_the_closure_follows_function_level_relative_and_from_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    _tree(tmp_path, {
        "src/birdclef/__init__.py": "X = 1\n",
        "src/birdclef/a/__init__.py": '"""doc."""\nfrom birdclef.a.b import f\n__all__ = ["f"]\n',
        "src/birdclef/a/b.py": "def f():\n    from . import c\n",
        "src/birdclef/a/c.py": "from ..d import g\n",
        "src/birdclef/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import birdclef.e\ng = 1\n",
        "src/birdclef/e.py": "",
        "src/birdclef/track/__init__.py": "import birdclef.e\n",
        "stages/s.py": "import os\nfrom birdclef.a import f\nfrom birdclef import track\n",
    })  # fmt: skip
    closure = stage_closure(tmp_path / "stages" / "s.py")
    assert set(closure) == {"birdclef", "birdclef.a", "birdclef.a.b", "birdclef.a.c", "birdclef.d"}
    assert closure["birdclef.d"] == "birdclef.a.c"
    assert _reexports_only(tmp_path / "src/birdclef/a/__init__.py")
    assert not _reexports_only(tmp_path / "src/birdclef/__init__.py")


def test_a_stage_missing_a_dep_is_reported_with_its_importer():
    stage = {"cmd": "python stages/infer.py --out x", "deps": ["stages/infer.py", "src/birdclef/infer"]}
    missing = undeclared(stage)
    assert any(m.startswith("src/birdclef/metric.py (imported by ") for m in missing)
    assert not any(m.startswith("src/birdclef/infer/") for m in missing)  # the folder covers its files
    assert undeclared({"cmd": "python stages/infer.py", "deps": []})[0] == "stages/infer.py (the stage's script)"


def test_every_output_is_one_a_fresh_workspace_gets_back() -> None:
    # DVC counts a missing output as a changed stage. An output that is neither in the DVC cache nor committed to
    # git is missing from every fresh workspace (a clone after `dvc pull`, each queued `dvc exp run`), so its stage
    # reran there: the acquire stage's uncached reports/data_docs (27-45 s per queued experiment) and the training
    # stages' build/resume/* scratch did. Uncached outputs must be files git keeps (metrics, plots).
    import subprocess

    uncached = []
    for name, stage in _stages().items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, opts = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
                if (opts or {}).get("cache", True) is False:
                    uncached.append((name, path.replace("${item.k}", "0")))
    assert uncached
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *[p for _, p in uncached]], cwd=REPO,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    assert not [(n, p) for n, p in uncached if p in ignored], "uncached outputs that git ignores"
