"""`birdclef ablate SPEC.yaml`: queue one DVC experiment per variant, run them, tabulate the metric per taxon."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from birdclef.io import atomic_path, load_params
from birdclef.track.ablate_ready import readiness_problems
from birdclef.track.ablate_spec import DEFAULT_METRIC, AblationSpec, available_cores, queue_commands
from birdclef.track.history import lookup, match_path, natural_key
from birdclef.track.pipeline import child_env, dvc_executable
from birdclef.track.provenance import git

__all__ = ["DEFAULT_METRIC", "AblationSpec", "ablate_command", "experiments", "markdown", "queue_commands", "resolve"]

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
                    "rev": rev.get("rev"),  # the experiment's commit: its outputs in the DVC cache
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


def repo_params(repo: Path) -> dict[str, Any]:
    """The repo's params.yaml (empty when it has none): which override keys are new to it."""
    path = repo / "params.yaml"
    return load_params(path) if path.is_file() else {}


def run_keys(spec: AblationSpec, kinds: Mapping[str, str]) -> set[str]:
    """Every params key a queued run overrides: the stages none of them reach are shared by all runs."""
    return {k.lstrip("+") for v in spec.variants if kinds.get(v, "retrain") != "reuse" for s in spec.seed_list()
            for k in spec.overrides(v, s)}  # fmt: skip


def run_ablation(
    spec: AblationSpec, repo: Path, run: bool = True, kinds: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Queue and run every variant x seed that trains (unless ``run`` is False), then read ``dvc exp show``."""
    env = child_env(None, "")
    env.pop("MLFLOW_TRACKING_URI")  # stages pick the project's store (or the user's own variable) themselves
    if run:
        for cmd in queue_commands(spec, kinds, repo_params(repo)):
            click.echo("$ " + shlex.join(["dvc", *cmd[1:]]), err=True)
            proc = subprocess.run(cmd, cwd=repo, env=env)
            if proc.returncode and "--run-all" not in cmd:
                raise click.ClickException(f"`{shlex.join(cmd[1:])}` failed (exit {proc.returncode})")
    show = subprocess.run([dvc_executable(), "exp", "show", "--json"], cwd=repo, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if show.returncode:
        raise click.ClickException(f"dvc exp show failed: {show.stderr.strip()[-2000:]}")
    return experiments(json.loads(show.stdout))


def seeded_table(spec: AblationSpec, repo: Path, results: Mapping[str, dict[str, Any]], kinds: Mapping[str, str],
                 header: dict[str, str], run: bool, markdown_path: Path) -> str:  # fmt: skip
    """Tabulate a seeded spec inside one MLflow parent run: the reuse stages run as its children, the table is
    logged to it as a table artifact (``ablation.json``) and as the markdown file."""
    from birdclef.track.ablate_seeds import collect, make_reuse
    from birdclef.track.ablate_table import frame
    from birdclef.track.ablate_table import markdown as seeded_markdown
    from birdclef.track.runs import parent_run, tracking_uri

    params = repo / "params.yaml"
    tracking = (load_params(params).get("tracking") or {}) if params.is_file() else {}
    with parent_run(f"ablate {spec.name}", tracking, {"ablation": spec.name, "dvc_stage": "ablate"}) as parent:
        reuse = make_reuse(spec, repo, run, parent.run_id, tracking_uri(repo.resolve()) if parent.run_id else "")
        rows, found, taxa = collect(spec, repo, results, kinds, reuse)
        text = f"# Ablation `{spec.name}`\n\n" + seeded_markdown(rows, taxa, found, spec.seed_list(), header)
        with atomic_path(markdown_path) as tmp:
            tmp.write_text(text)
        parent.log_table(frame(rows, taxa), "ablation.json")
        parent.log_artifact(markdown_path)
        if found is not None:
            parent.log_metrics({"baseline_score": sum(found.scores) / len(found.scores),
                                "bootstrap_half_width": found.half_width, "seed_sd": found.seed_sd})  # fmt: skip
    return text


@click.command("ablate")
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Markdown file to write [default: reports/ablation-<name>.md].",
)
@click.option("--metric", default=None, help="Override the spec's metric (FILE:KEY, `|` for fallbacks; unseeded).")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option("--no-run", is_flag=True, help="Only tabulate runs that already exist (same names, reuse folders).")
@click.option("--dry-run", is_flag=True, help="Print each variant's kind (seeded specs) and the DVC commands; exit.")
def ablate_command(spec_path: Path, out: Path | None, metric: str | None, repo: Path, no_run: bool,
                   dry_run: bool) -> None:  # fmt: skip
    """Run DVC experiments for the variants of SPEC.yaml and write a markdown table of their effect.

    \b
    Unseeded SPEC.yaml (one run per variant, metric from `dvc exp show`):
      name: losses                       # experiments are named losses-<variant>
      baseline: bce                      # deltas are taken against it (default: the first variant)
      metric: metrics/infer.json:score   # default; per-taxon columns come from score_<taxon> keys
      jobs: 1                            # runs at a time; with more, each stage's threads are capped at
                                         # cores // jobs (intra-op threads spin: oversubscribed runs crawl)
      variants:
        bce: {train.loss.name: bce}
        focal: {train.loss.name: focal}

    \b
    Seeded SPEC.yaml (ablations/catalogue.yaml): every variant x seed is one run named <name>-<variant>-s<seed>,
    the seed written to seed_keys (default train.loop.seed):
      seeds: [0, 1, 2]
      targets: [ensemble]                # dvc exp run reproduces these (and what they need)
      predictions: build/ensemble/member_scores/ensemble.parquet
      preset: presets/bench.yaml         # optional: params every run gets (its `synth:` data is checked)
      variants:
        baseline: {}
        focal: {set: {train.loss.name: focal}, published: {sign: "+", rank: 2, ref: L2}}
        rank_mean: {set: {ensemble.combination: rank}, published: {sign: "+", rank: 7}}
    A variant whose params reach only the ensemble stage (dvc.yaml's params lists decide) is "reuse": no training,
    the ensemble stage reruns on the baseline's members of the same seed (build/ablate/<name>/). The table: mean
    delta over seeds with a paired 95% interval (test soundscapes and seeds resampled), per taxon class, the
    published sign and rank, "reproduced?"; the metric's bootstrap half-width and the seed spread under it. It is
    also logged as a table to an MLflow parent run "ablate <name>".
    """
    try:
        spec = AblationSpec.load(spec_path, repo)
        kinds = spec.kinds(repo)
        if not dry_run:
            spec.check_data(repo)
        problems = [] if dry_run or no_run else readiness_problems(repo, run_keys(spec, kinds), spec.targets)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if problems:
        raise click.ClickException(
            "the stages every run reuses are not ready, so each queued run would fail in them or recompute them:\n  "
            + "\n  ".join(problems)
            + "\nrun `dvc repro " + " ".join(dict.fromkeys(p.split(":")[0].split(" ")[0] for p in problems))
            + "` and commit dvc.lock (and .dvc files), then ablate again"
        )
    if metric:
        spec.metric = metric
    if spec.threads:
        click.echo(f"# {spec.jobs} runs at a time on {available_cores()} cores: "
                   + ", ".join(f"{k}={v}" for k, v in spec.threads.items()) + " per run", err=True)  # fmt: skip
    if dry_run:
        if spec.seeds is not None:
            for variant, kind in kinds.items():
                click.echo(f"# {variant}: {kind}")
        for cmd in queue_commands(spec, kinds, repo_params(repo)):
            click.echo(shlex.join(["dvc", *cmd[1:]]))
        return
    command = (
        ["birdclef", "ablate", str(spec_path)]
        + (["--metric", metric] if metric else [])
        + (["--no-run"] if no_run else [])
    )
    results = run_ablation(spec, repo, run=not no_run, kinds=kinds)
    sha = git(repo, "rev-parse", "HEAD") or "unknown"
    header = {
        "commit": f"`{sha}` ({git(repo, 'log', '-1', '--format=%s', sha)})",
        "command": f"`{shlex.join(command)}`",
        "dvc": "; ".join(f"`{shlex.join(['dvc', *c[1:]])}`" for c in queue_commands(spec, kinds, repo_params(repo))),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if spec.preset:
        header["preset"] = f"`{spec.preset}` (every run, the baseline's included)"
    target = out or repo / "reports" / f"ablation-{spec.name}.md"
    if spec.seeds is not None:
        header["seeds"] = ", ".join(map(str, spec.seeds)) + f" (written to {', '.join(spec.seed_keys)})"
        header["predictions"] = f"`{spec.predictions}` against `{spec.labels}`"
        table = seeded_table(spec, repo, results, kinds, header, not no_run, target)
    else:
        table = markdown(spec, results, header)
        with atomic_path(target) as tmp:
            tmp.write_text(table)
    click.echo(table)
    click.echo(f"written to {target}", err=True)
