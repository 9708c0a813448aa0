"""`birdclef ablate SPEC.yaml`: queue one DVC experiment per variant, run them, tabulate the metric per taxon."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from birdclef.io import atomic_path
from birdclef.track.history import lookup, match_path, natural_key
from birdclef.track.overrides import set_args
from birdclef.track.pipeline import child_env, dvc_executable
from birdclef.track.provenance import git

DEFAULT_METRIC = "metrics/infer.json:score|metrics/train/it2.json:soundscape_auc"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class AblationSpec:
    """A parsed ablation spec.

    Attributes:
        name: prefix of the experiment names (``<name>-<variant>``).
        variants: ``{variant: {dotted params key: value}}`` in file order; ``{}`` runs the committed params.
        baseline: the variant the deltas are taken against (the first one by default).
        metric: ``FILE:KEY`` reference(s), ``|``-separated fallbacks (FILE may be a glob).
        taxa: taxon suffixes to tabulate (``<KEY>_<taxon>``); None = every one found.
        jobs: experiments run at a time.
    """

    name: str
    variants: dict[str, dict[str, Any]]
    baseline: str
    metric: str = DEFAULT_METRIC
    taxa: list[str] | None = None
    jobs: int = 1

    @classmethod
    def load(cls, path: Path) -> AblationSpec:
        """Read and check a spec file; errors name the file and the bad entry."""
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from err
        variants = doc.get("variants")
        if not isinstance(variants, Mapping) or not variants:
            raise ValueError(f"{path}: `variants` must map variant names to params overrides")
        name = str(doc.get("name", path.stem))
        for label in (name, *map(str, variants)):
            if not _NAME.match(label):
                raise ValueError(f"{path}: {label!r} is not a valid experiment name (letters, digits, - and _)")
        clean: dict[str, dict[str, Any]] = {}
        for variant, overrides in variants.items():
            if overrides is not None and not isinstance(overrides, Mapping):
                raise ValueError(f"{path}: variant {variant!r} must map params keys to values, got {overrides!r}")
            clean[str(variant)] = dict(overrides or {})
        baseline = str(doc.get("baseline", next(iter(clean))))
        if baseline not in clean:
            raise ValueError(f"{path}: baseline {baseline!r} is not one of the variants {sorted(clean)}")
        taxa = doc.get("taxa")
        return cls(name, clean, baseline, str(doc.get("metric", DEFAULT_METRIC)),
                   [str(t) for t in taxa] if taxa else None, int(doc.get("jobs", 1)))  # fmt: skip

    def exp_name(self, variant: str) -> str:
        """The DVC experiment name of a variant."""
        return f"{self.name}-{variant}"


def queue_commands(spec: AblationSpec) -> list[list[str]]:
    """The DVC commands that queue every variant, then run the queue."""
    dvc = dvc_executable()
    cmds = [[dvc, "exp", "run", "--queue", "-n", spec.exp_name(v), *set_args(o)] for v, o in spec.variants.items()]
    return [*cmds, [dvc, "exp", "run", "--run-all", "--jobs", str(spec.jobs)]]


def experiments(show: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: {"metrics": {file: doc}, "state": str, "error": str | None}}`` from ``dvc exp show --json``.

    The newest experiment of a name wins. A failed, queued or running experiment gets no metrics: DVC shows the
    baseline's files for it, which would read as a result.
    """
    out: dict[str, dict[str, Any]] = {}
    for baseline in show:
        for group in baseline.get("experiments") or []:
            executor = group.get("executor") or {}
            for rev in group.get("revs") or []:
                data = rev.get("data") or {}
                err = rev.get("error")
                state = "failed" if err else str(executor.get("state") or "success")
                metrics = {f: (m or {}).get("data") for f, m in (data.get("metrics") or {}).items()}
                ok = state == "success"
                out.setdefault(str(rev.get("name") or rev.get("rev")), {
                    "metrics": {f: d for f, d in metrics.items() if d is not None} if ok else {},
                    "state": state,
                    "error": err.get("msg") if isinstance(err, Mapping) else err,
                })  # fmt: skip
    return out


def resolve(metrics: Mapping[str, Any], ref: str) -> tuple[float | None, dict[str, float]]:
    """The metric and its per-taxon values (``<KEY>_<taxon>``, one-word suffixes) in a ``{file: doc}`` map."""
    for one in ref.split("|"):
        pattern, _, key = one.strip().rpartition(":")
        for path in sorted((p for p in metrics if match_path(p, pattern)), key=natural_key, reverse=True):
            doc = metrics[path]
            value = lookup(doc, key)
            if value is None:
                continue
            names = {k for d in [doc, *[v for v in doc.values() if isinstance(v, Mapping)]] for k in d}
            taxa = {}
            for k in sorted(names):
                suffix = k[len(key) + 1 :] if k.startswith(f"{key}_") else ""
                if suffix and "_" not in suffix:
                    v = lookup(doc, k)
                    if v is not None:
                        taxa[suffix.lower()] = v
            return value, taxa
    return None, {}


def _cell(v: float | None, base: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if base is None or v is None else f"{v:.4f} ({v - base:+.4f})"


def markdown(spec: AblationSpec, results: Mapping[str, dict[str, Any]], header: Mapping[str, str]) -> str:
    """The ablation table: metric overall and per taxon for each variant, with the change from the baseline."""
    values = {v: resolve((results.get(spec.exp_name(v)) or {}).get("metrics") or {}, spec.metric)
              for v in spec.variants}  # fmt: skip
    taxa = spec.taxa or sorted({t for _, per in values.values() for t in per})
    base_value, base_taxa = values[spec.baseline]
    lines = [f"# Ablation `{spec.name}`", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [f"- metric: `{spec.metric}`; deltas against `{spec.baseline}`", ""]
    lines.append("| " + " | ".join(["variant", "overrides", "metric", *taxa]) + " |")
    lines.append("|---" * (3 + len(taxa)) + "|")
    for variant, overrides in spec.variants.items():
        value, per = values[variant]
        res = results.get(spec.exp_name(variant))
        status = " (not found)" if not res else "" if res["state"] == "success" else f" ({res['state']})"
        sets = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "(committed params)"
        is_base = variant == spec.baseline
        row = [f"{variant}{' (baseline)' if is_base else ''}{status}", sets,
               _cell(value, None if is_base else base_value)]  # fmt: skip
        row += [_cell(per.get(t), None if is_base else base_taxa.get(t)) for t in taxa]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def run_ablation(spec: AblationSpec, repo: Path, run: bool = True) -> dict[str, dict[str, Any]]:
    """Queue and run every variant (unless ``run`` is False), then read the results from ``dvc exp show``."""
    env = child_env(None, "")
    env.pop("MLFLOW_TRACKING_URI")  # stages pick the project's store (or the user's own variable) themselves
    if run:
        for cmd in queue_commands(spec):
            click.echo("$ " + shlex.join(["dvc", *cmd[1:]]), err=True)
            proc = subprocess.run(cmd, cwd=repo, env=env)
            if proc.returncode and "--run-all" not in cmd:
                raise click.ClickException(f"`{shlex.join(cmd[1:])}` failed (exit {proc.returncode})")
    show = subprocess.run([dvc_executable(), "exp", "show", "--json"], cwd=repo, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if show.returncode:
        raise click.ClickException(f"dvc exp show failed: {show.stderr.strip()[-2000:]}")
    return experiments(json.loads(show.stdout))


@click.command("ablate")
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Markdown file to write [default: reports/ablation-<name>.md].",
)
@click.option("--metric", default=None, help="Override the spec's metric (FILE:KEY, `|` for fallbacks).")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option("--no-run", is_flag=True, help="Only tabulate experiments that already ran (same names).")
@click.option("--dry-run", is_flag=True, help="Print the DVC commands and exit.")
def ablate_command(spec_path: Path, out: Path | None, metric: str | None, repo: Path, no_run: bool,
                   dry_run: bool) -> None:  # fmt: skip
    """Run one DVC experiment per variant of SPEC.yaml and write a markdown table of the metric per variant.

    \b
    SPEC.yaml:
      name: losses                       # experiments are named losses-<variant>
      baseline: bce                      # deltas are taken against it (default: the first variant)
      metric: metrics/infer.json:score   # default; per-taxon columns come from score_<taxon> keys
      jobs: 1
      variants:
        bce: {train.loss.name: bce}
        focal: {train.loss.name: focal}
    """
    try:
        spec = AblationSpec.load(spec_path)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if metric:
        spec.metric = metric
    if dry_run:
        for cmd in queue_commands(spec):
            click.echo(shlex.join(["dvc", *cmd[1:]]))
        return
    command = (
        ["birdclef", "ablate", str(spec_path)]
        + (["--metric", metric] if metric else [])
        + (["--no-run"] if no_run else [])
    )
    results = run_ablation(spec, repo, run=not no_run)
    sha = git(repo, "rev-parse", "HEAD") or "unknown"
    header = {
        "commit": f"`{sha}` ({git(repo, 'log', '-1', '--format=%s', sha)})",
        "command": f"`{shlex.join(command)}`",
        "dvc": "; ".join(f"`{shlex.join(['dvc', *c[1:]])}`" for c in queue_commands(spec)),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    table = markdown(spec, results, header)
    target = out or repo / "reports" / f"ablation-{spec.name}.md"
    with atomic_path(target) as tmp:
        tmp.write_text(table)
    click.echo(table)
    click.echo(f"written to {target}", err=True)
