"""The Kaggle bundle: ONNX graphs, the export spec, one standalone script, its numpy-only helpers, a MANIFEST."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml

from birdclef.infer import backends, ensemble, kaggle_script, melspec, postprocess, teacher_member, windows
from birdclef.infer.budget import KAGGLE_LIMIT_MINUTES, format_plan, plan_bundle
from birdclef.io import atomic_path, load_params, write_json
from birdclef.teachers import runtime as teacher_runtime
from birdclef.track.runs import params_digest, provenance_tags

SCRIPT = "predict_kaggle.py"
PACKAGE = "birdclef_bundle"
MODEL_DIR = "model"
MANIFEST = "MANIFEST.json"
HELPERS = (windows, postprocess, ensemble, melspec, backends, teacher_member)
"""Modules copied next to the script; at import time they may only need what a Kaggle image has. Not copied: the
repository's side of inference (``runner``, ``members``, ``sharded``, ``ensemble_spec``, ``export``, ``onnx_graphs``,
``parity``, ``predict``), which the script mirrors step by step without torch or birdclef."""
RENAMED = {teacher_runtime: "teacher_runtime.py"}
"""Helpers from other packages, copied under these names (``teacher_member`` imports ``.teacher_runtime``)."""
BUNDLED = frozenset({Path(m.__file__).stem for m in HELPERS} | {Path(n).stem for n in RENAMED.values()})
"""The module names inside ``birdclef_bundle/``: the only ones a helper or the script may import from the bundle."""
TEACHER_DIR = "teacher"
"""Under ``model/``: a teacher member's model and label files."""
ALLOWED_IMPORTS = {"numpy", "pandas", "soundfile", "onnxruntime", "__future__", *sys.stdlib_module_names}


def check_standalone(path: str | os.PathLike[str], bundled: Iterable[str] = BUNDLED) -> None:
    """Raise if the module at ``path`` imports, at module level, anything beyond numpy, pandas, soundfile,
    onnxruntime, the standard library and the bundled helpers (imports inside functions run only on use).

    A relative import (``from .melspec import ...``) or one from ``birdclef_bundle`` must name a module of
    ``bundled``: ``from .runner import infer`` would load in the repository and fail in the bundle.
    """
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    allowed, bundled = ALLOWED_IMPORTS | {PACKAGE}, set(bundled)
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop(0)
        if isinstance(node, ast.Try):
            nodes += node.body  # the `except ImportError` fallback runs only inside the repository
            continue
        names: Iterable[str] = ()
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        bad = [n for n in names if n.split(".")[0] not in allowed]
        if isinstance(node, ast.ImportFrom):
            bad += [n for n in _bundle_modules(node) if n not in bundled]
        if bad:
            raise ValueError(f"{path}:{node.lineno}: imports {bad} at module level; the bundle has no such package")


def _bundle_modules(node: ast.ImportFrom) -> list[str]:
    # The bundle modules an import names: `from . import x` / `from birdclef_bundle import x` -> x (each name),
    # `from .x import y` / `from birdclef_bundle.x import y` -> x; [] for any other import.
    module = node.module or ""
    if node.level == 0 and module != PACKAGE and not module.startswith(f"{PACKAGE}."):
        return []
    inside = module.removeprefix(PACKAGE).lstrip(".") if node.level == 0 else module
    return [inside.split(".")[0]] if inside else [a.name for a in node.names]


def build_bundle(
    export_dir: str | os.PathLike[str], out: str | os.PathLike[str], root: str | os.PathLike[str] = "."
) -> dict[str, Any]:
    """Write the bundle folder ``out`` atomically and return its manifest.

    Layout: ``predict_kaggle.py`` (the standalone script), ``birdclef_bundle/`` (windows, postprocess,
    ensemble, melspec, backends, teacher_member, teacher_runtime), ``model/`` (front-end and body graphs,
    export_spec.json; ``model/teacher/`` the teacher member's model and label files when the ensemble has one,
    their paths in the spec made relative to ``model/``), ``MANIFEST.json``.

    Args:
        export_dir: the export stage's folder.
        out: bundle folder to (re)create.
        root: project root, for the git commit, dvc.lock, data.dvc and params.yaml recorded in the manifest.
    """
    spec = backends.read_spec(export_dir)
    if not spec.get("ensemble"):
        raise ValueError(f"{export_dir}: the export has no ensemble spec (export it with the export stage)")
    for module in (*HELPERS, *RENAMED, kaggle_script):
        check_standalone(module.__file__)
    teacher = spec["ensemble"].get("teacher")
    teachers = teacher_member.teacher_files(teacher) if teacher else {}  # there and unchanged, or an error
    with atomic_path(out) as tmp:
        package = tmp / PACKAGE
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('"""numpy-only inference helpers copied from birdclef.infer."""\n')
        for module in HELPERS:
            shutil.copy2(module.__file__, package / Path(module.__file__).name)
        for module, name in RENAMED.items():
            shutil.copy2(module.__file__, package / name)
        shutil.copy2(kaggle_script.__file__, tmp / SCRIPT)
        model = tmp / MODEL_DIR
        model.mkdir()
        # Only the graphs the script runs: front ends and bodies (fused graphs serve `birdclef predict`).
        for mel in spec["mels"].values():
            shutil.copy2(Path(export_dir) / mel["frontend"], model / mel["frontend"])
            if mel.get("numpy"):
                shutil.copy2(Path(export_dir) / mel["numpy"], model / mel["numpy"])
        for member in spec["members"]:
            for name in _body_files(member):
                shutil.copy2(Path(export_dir) / name, model / name)
            member.pop("fused", None)
        for key, path in teachers.items():  # Kaggle has no internet: the teacher travels with the bundle
            (model / TEACHER_DIR).mkdir(exist_ok=True)
            shutil.copy2(path, model / TEACHER_DIR / path.name)
            teacher["files"][key]["path"] = f"{TEACHER_DIR}/{path.name}"
        write_json(model / backends.SPEC_FILE, spec)
        manifest = {**provenance(root), "backend": spec.get("backend"), "files": file_hashes(tmp)}
        write_json(tmp / MANIFEST, manifest)
    return manifest


def _body_files(member: dict[str, Any]) -> list[str]:
    # The served body (an OpenVINO IR: its .xml and .bin) and the fp32 one a runtime without OpenVINO falls back on.
    names = [member["body"], *([member["body_fp32"]] if member.get("body_fp32") else [])]
    return [*names, *(str(Path(n).with_suffix(".bin")) for n in names if n.endswith(".xml"))]


def budget_plan(
    export_dir: str | os.PathLike[str], timings: str | os.PathLike[str], limit_minutes: float = KAGGLE_LIMIT_MINUTES
) -> dict[str, Any] | None:
    """``budget.plan_bundle`` of an export from the stage timings in ``timings`` (``export.json``, ``infer.json``);
    ``None`` when there is no ``export.json`` there."""
    folder = Path(timings)
    if not (folder / "export.json").is_file():
        return None
    infer = folder / "infer.json"
    return plan_bundle(
        backends.read_spec(export_dir),
        json.loads((folder / "export.json").read_text()),
        json.loads(infer.read_text()) if infer.is_file() else None,
        limit_minutes,
    )


def provenance(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Git commit and dirty flag, dvc.lock / data.dvc md5s and the params digest of the project at ``root``."""
    root = Path(root)
    params_file = root / "params.yaml"
    params = load_params(params_file) if params_file.is_file() else {}
    tags = provenance_tags(root, "bundle", params)
    out: dict[str, Any] = {
        "format": "birdclef-bundle",
        "git_commit": tags["git_commit"],
        "git_dirty": tags["git_dirty"] == "true",
        "params_digest": params_digest(params) if params else None,
        "data_dvc_md5": tags.get("data_md5"),
        "dvc_lock_md5": None,
        "dvc_lock_outs": {},
    }
    lock = root / "dvc.lock"
    if lock.is_file():
        out["dvc_lock_md5"] = hashlib.md5(lock.read_bytes()).hexdigest()
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        out["dvc_lock_outs"] = {
            o["path"]: o.get("md5") for stage in stages.values() for o in stage.get("outs", []) if "path" in o
        }
    return out


def file_hashes(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """{relative path: {"sha256", "bytes"}} of every file under ``folder``, sorted."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(folder).as_posix()] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return out


def verify_bundle(folder: str | os.PathLike[str]) -> list[str]:
    """Files of a bundle that are missing, added or changed since its manifest was written (empty = intact)."""
    folder = Path(folder)
    recorded = json.loads((folder / MANIFEST).read_text())["files"]
    actual = file_hashes(folder)
    actual.pop(MANIFEST, None)
    return sorted(p for p in set(recorded) | set(actual) if recorded.get(p) != actual.get(p))


@click.command("bundle")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="bundle folder")
@click.option(
    "--export", "export_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("build/export"), show_default=True, help="the export stage's folder",
)  # fmt: skip
@click.option(
    "--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."), show_default=True,
    help="project root (git commit, dvc.lock, data.dvc, params.yaml for the manifest)",
)  # fmt: skip
@click.option(
    "--timings", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="the stages' timing files (export.json: per-member seconds; infer.json: decode share, start-up) "
    "[default: ROOT/metrics/timing]",
)  # fmt: skip
@click.option("--limit-minutes", type=float, default=KAGGLE_LIMIT_MINUTES, show_default=True)
@click.option("--over-budget", type=click.Choice(["refuse", "warn"]), default="refuse", show_default=True,
              help="what to do with a bundle projected past --limit-minutes")  # fmt: skip
def bundle_command(
    out: Path, export_dir: Path, root: Path, timings: Path | None, limit_minutes: float, over_budget: str
) -> None:
    """Pack the exported ensemble into a Kaggle-ready folder: ONNX graphs, predict_kaggle.py, MANIFEST.json.

    First prints the budget plan (projected minutes for 700 soundscapes on 4 cores, how many members of each kind
    fit) and refuses a bundle projected past the limit unless --over-budget warn.
    Upload the folder as a Kaggle dataset; in the notebook run
    `python <bundle>/predict_kaggle.py --soundscapes <test_soundscapes> --sample <sample_submission.csv>`.
    """
    timings = timings or root / "metrics" / "timing"
    try:
        plan = budget_plan(export_dir, timings, limit_minutes)
    except ValueError as err:  # timings of an export made before the planner: build, but say why there is no plan
        click.echo(f"no budget plan: {err}", err=True)
        plan = {}
    if plan is None:
        click.echo(f"no {timings / 'export.json'}: no budget plan (run the export stage)", err=True)
    elif plan:
        click.echo(format_plan(plan))
        if plan["over_limit"]:
            why = f"projected {plan['projected_minutes']:.1f} minutes, past the {limit_minutes:g}-minute limit"
            if over_budget == "refuse":
                raise click.ClickException(
                    f"{why}: drop members or export them in fp16/int8/int8_nncf (--over-budget warn)"
                )
            click.echo(f"WARNING: {why}", err=True)
    manifest = build_bundle(export_dir, out, root)
    size = sum(f["bytes"] for f in manifest["files"].values()) / 2**20
    dirty = " (dirty working tree)" if manifest["git_dirty"] else ""
    click.echo(f"{out}: {len(manifest['files'])} files, {size:.1f} MB, commit {manifest['git_commit'][:12]}{dirty}")
