"""The ablation spec (``birdclef ablate SPEC.yaml``): variants, seeds, published effects, and its DVC commands."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from birdclef.track.ablate_table import SIGNS
from birdclef.track.overrides import set_args
from birdclef.track.pipeline import PRESET_DATA_KEY, dvc_executable
from birdclef.track.reach import stage_params, variant_kind

DEFAULT_METRIC = "metrics/infer.json:score|metrics/train/it2.json:soundscape_auc"
DEFAULT_SEED_KEYS = ("train.loop.seed",)
DEFAULT_PREDICTIONS = "build/ensemble/member_scores/ensemble.parquet"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ENTRY_KEYS = {"set", "published", "note"}
THREAD_KEYS = ("train.threads", "pseudo.threads", "teacher.threads", "ensemble.threads", "export.threads",
               "infer.threads")  # fmt: skip
"""The stages' intra-op thread counts that ``jobs`` concurrent runs share the cores through (:func:`thread_caps`)."""


@dataclass
class AblationSpec:
    """A parsed ablation spec.

    Attributes:
        name: prefix of the experiment names (``<name>-<variant>``, ``-s<seed>`` with seeds).
        variants: ``{variant: {dotted params key: value}}`` in file order; ``{}`` runs the committed params.
        baseline: the variant the deltas are taken against (the first one by default).
        metric: ``FILE:KEY`` reference(s), ``|``-separated fallbacks (FILE may be a glob): the unseeded table.
        taxa: taxon suffixes to tabulate (``<KEY>_<taxon>``, or taxon class names); None = every one found.
        jobs: experiments run at a time.
        seeds: training seeds; set, every variant runs once per seed and the table is the seeded one
            (paired intervals from the prediction tables). None: one run per variant, metrics from ``dvc exp show``.
        seed_keys: the params keys each seed is written to.
        published: ``{variant: {"sign": "+"|"-"|"0", "rank": ..., "ref": ...}}``, the write-ups' effect (no
            sign: the technique was used but no write-up compares it with the baseline's setting).
        notes: ``{variant: text}``.
        predictions: the test prediction table of a run (an output of a reuse stage).
        labels, taxonomy: the test labels and the species -> class_name table (workspace paths).
        targets: the stages ``dvc exp run`` reproduces (with their upstream); [] = the whole pipeline.
        preset: a params preset (``presets/bench.yaml``) every run gets, the baseline's included, under the
            variant's own overrides; None: the committed params.
        base: the preset's dotted overrides (its ``synth`` dataset entry aside).
        data: the preset's ``synth`` entry (``{preset: bench, seed: 0}``): the SynthCLEF data it is meant for.
        threads: ``{thread key: cores // jobs}`` for the committed thread counts that ``jobs`` runs at a time would
            oversubscribe (:func:`thread_caps`); the preset's and a variant's own values win over them.
    """

    name: str
    variants: dict[str, dict[str, Any]]
    baseline: str
    metric: str = DEFAULT_METRIC
    taxa: list[str] | None = None
    jobs: int = 1
    seeds: list[int] | None = None
    seed_keys: list[str] = field(default_factory=lambda: list(DEFAULT_SEED_KEYS))
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    predictions: str = DEFAULT_PREDICTIONS
    labels: str = "data/test_labels.csv"
    taxonomy: str = "data/taxonomy.csv"
    targets: list[str] = field(default_factory=list)
    preset: str | None = None
    base: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    threads: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, repo: Path = Path("."), cores: int | None = None) -> AblationSpec:
        """Read and check a spec file; errors name the file and the bad entry.

        A variant is either a mapping of params overrides, or ``{set: {...}, published: {sign, rank, ref},
        note: ...}``. ``preset:`` is a path relative to ``repo``. ``cores``: what the runs share (default: the
        cores this process may use), for :attr:`threads`.
        """
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
        published: dict[str, dict[str, Any]] = {}
        notes: dict[str, str] = {}
        for variant, entry in variants.items():
            if entry is not None and not isinstance(entry, Mapping):
                raise ValueError(f"{path}: variant {variant!r} must map params keys to values, got {entry!r}")
            entry = dict(entry or {})
            if entry and set(entry) <= _ENTRY_KEYS:  # the long form: overrides under `set`
                sets, pub = entry.get("set") or {}, entry.get("published") or {}
                if not isinstance(sets, Mapping) or not isinstance(pub, Mapping):
                    raise ValueError(f"{path}: variant {variant!r}: `set` and `published` must be mappings")
                if pub.get("sign") is not None and str(pub["sign"]) not in SIGNS:  # no sign: no head-to-head
                    raise ValueError(f"{path}: variant {variant!r}: published.sign must be one of {SIGNS}, "
                                     f"got {pub.get('sign')!r}")  # fmt: skip
                published[str(variant)] = dict(pub)
                notes[str(variant)] = str(entry.get("note") or "")
                entry = dict(sets)
            clean[str(variant)] = entry
        baseline = str(doc.get("baseline", next(iter(clean))))
        if baseline not in clean:
            raise ValueError(f"{path}: baseline {baseline!r} is not one of the variants {sorted(clean)}")
        seeds = doc.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not seeds or
                                  not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):  # fmt: skip
            raise ValueError(f"{path}: `seeds` must be a non-empty list of integers, got {seeds!r}")
        taxa = doc.get("taxa")
        preset, base, data = _preset(path, doc.get("preset"), repo)
        jobs = int(doc.get("jobs", 1))
        params = yaml.safe_load((repo / "params.yaml").read_text()) if (repo / "params.yaml").exists() else {}
        threads = thread_caps(params or {}, set(base), jobs, cores or available_cores())
        return cls(
            name, clean, baseline, str(doc.get("metric", DEFAULT_METRIC)), [str(t) for t in taxa] if taxa else None,
            jobs, seeds, [str(k) for k in doc.get("seed_keys") or DEFAULT_SEED_KEYS], published,
            notes, str(doc.get("predictions", DEFAULT_PREDICTIONS)), str(doc.get("labels", "data/test_labels.csv")),
            str(doc.get("taxonomy", "data/taxonomy.csv")), [str(t) for t in doc.get("targets") or []],
            preset, base, data, threads,
        )  # fmt: skip

    def exp_name(self, variant: str, seed: int | None = None) -> str:
        """The DVC experiment name of a variant (of one seed)."""
        return f"{self.name}-{variant}" + ("" if seed is None else f"-s{seed}")

    def seed_list(self) -> list[int | None]:
        """The seeds to run, ``[None]`` for an unseeded spec (one run per variant, committed seed)."""
        return list(self.seeds) if self.seeds is not None else [None]

    def overrides(self, variant: str, seed: int | None) -> dict[str, Any]:
        """The thread caps, the preset's overrides over them, the variant's over those, and the seed written to
        every seed key."""
        seeds = {} if seed is None else dict.fromkeys(self.seed_keys, seed)
        return {**self.threads, **self.base, **self.variants[variant], **seeds}

    def check_data(self, repo: Path) -> None:
        """Refuse a preset meant for SynthCLEF data that ``repo/data`` does not hold.

        Raises:
            ValueError: the preset names a ``synth`` dataset and data/ is another preset's (or not SynthCLEF).
        """
        if not self.data or "preset" not in self.data:
            return
        want = str(self.data["preset"])
        info = repo / "data" / "synth_truth" / "generator.json"
        have = json.loads(info.read_text()).get("preset") if info.is_file() else None
        if have != want:
            held = f"SynthCLEF {have!r}" if have else "no SynthCLEF data"
            raise ValueError(
                f"preset {self.preset} is meant for the SynthCLEF {want!r} dataset, but {repo / 'data'} holds "
                f"{held}: birdclef data synth --preset {want} --seed {self.data.get('seed', 0)} --out data "
                "(then dvc add data)"
            )

    def kinds(self, repo: Path) -> dict[str, str]:
        """``{variant: "baseline" | "reuse" | "retrain"}`` from the repo's dvc.yaml (``reach.variant_kind``).

        An unseeded spec runs every variant (``retrain``), as before seeds existed.

        Raises:
            ValueError: a variant sets a key no stage reads.
        """
        stages = stage_params(repo / "dvc.yaml")
        out = {}
        for variant, sets in self.variants.items():
            try:
                kind = variant_kind(sets, stages)
            except ValueError as err:
                raise ValueError(f"variant {variant!r}: {err}") from err
            out[variant] = "baseline" if variant == self.baseline else kind if self.seeds is not None else "retrain"
        return out


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_caps(params: Mapping[str, Any], explicit: set[str], jobs: int, cores: int) -> dict[str, int]:
    """Thread counts for ``jobs`` runs at a time on ``cores``: each stage's at most ``cores // jobs`` (at least 1).

    Torch's and onnxruntime's intra-op threads spin while they wait: two runs of 2 threads each on 2 cores ran 4-16 s
    per training step instead of 0.9 s (the real-audio benchmark, README). A committed count that is null ("every
    core") or above the share is capped; ``explicit`` keys (the preset's) are left as they are.

    Args:
        params: the committed params.yaml.
        explicit: dotted keys set by the spec's preset.
        jobs: runs at a time (``jobs <= 1``: no caps).
        cores: cores the runs share.

    Returns:
        ``{dotted key: threads}`` for the keys of :data:`THREAD_KEYS` to override.
    """
    if jobs <= 1:
        return {}
    share = max(1, cores // jobs)
    out = {}
    for key in THREAD_KEYS:
        section, _, name = key.partition(".")
        block = params.get(section)
        if key in explicit or not isinstance(block, Mapping) or name not in block:
            continue
        if block[name] is None or int(block[name]) > share:
            out[key] = share
    return out


def _preset(spec: Path, value: Any, repo: Path) -> tuple[str | None, dict[str, Any], dict[str, Any] | None]:
    """``(path, overrides, synth entry)`` of a spec's ``preset:`` (all empty without one)."""
    if value is None:
        return None, {}, None
    target = repo / str(value)
    try:
        doc = yaml.safe_load(target.read_text()) or {}
    except OSError as err:
        raise ValueError(f"{spec}: preset {value!r}: {err.strerror or err} ({target})") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{spec}: preset {value!r} is not valid YAML: {err}") from err
    if not isinstance(doc, Mapping):
        raise ValueError(f"{spec}: preset {value!r} must map dotted params keys to values")
    data = doc.get(PRESET_DATA_KEY)
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"{spec}: preset {value!r}: `{PRESET_DATA_KEY}` must be a mapping like {{preset: bench}}")
    base = {str(k): v for k, v in doc.items() if k != PRESET_DATA_KEY}
    return str(value), base, dict(data) if data is not None else None


def queue_commands(
    spec: AblationSpec, kinds: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None
) -> list[list[str]]:
    """The DVC commands that queue every variant x seed that trains (not the ``reuse`` ones), then run the queue.

    ``params`` (the repo's params.yaml) marks keys it lacks ``+key=value``, as ``variant_problems`` and the reuse
    runs do: Hydra refuses to override a key that is not there (a preset's new mel config's ``deltas``).
    """
    dvc = dvc_executable()
    cmds = [
        [dvc, "exp", "run", "--queue", "-n", spec.exp_name(v, s), *set_args(spec.overrides(v, s), params),
         *spec.targets]
        for v in spec.variants
        if (kinds or {}).get(v, "retrain") != "reuse"
        for s in spec.seed_list()
    ]
    return [*cmds, [dvc, "exp", "run", "--run-all", "--jobs", str(spec.jobs)]]


def variant_problems(spec: AblationSpec, params_path: Path, workdir: Path) -> dict[str, list[str]]:
    """Each variant x seed's params, applied as ``dvc exp run -S`` applies them, under the strict params checks.

    Nothing runs: a copy of params.yaml gets the overrides (DVC's Hydra grammar, ``+`` for new keys) and is
    checked by ``train.params.check_params`` (every training section, unknown keys refused), the ensemble
    section's ``check_cfg`` and ``postprocess.resolve``. A key that is not in params.yaml and that no schema
    declares is thus refused too.

    Args:
        spec: the ablation spec.
        params_path: the committed params.yaml.
        workdir: a scratch folder for the copies.

    Returns:
        ``{variant: [problem, ...]}`` for the variants with problems (empty: every variant is valid).
    """
    from dvc.utils.hydra import apply_overrides

    from birdclef.infer import ensemble_spec, postprocess
    from birdclef.train.params import problems

    text = params_path.read_text()
    current = yaml.safe_load(text) or {}
    out: dict[str, list[str]] = {}
    for variant in spec.variants:
        for seed in spec.seed_list()[:1]:  # the seeds differ only in the value of the seed keys: one stands for all
            target = workdir / f"{variant}-{seed}.yaml"
            target.write_text(text)
            found: list[str] = []
            try:
                apply_overrides(str(target), set_args(spec.overrides(variant, seed), current)[1::2])
                params = yaml.safe_load(target.read_text())
                found += problems(params)
                cfg = ensemble_spec.check_cfg(params.get("ensemble"))
                postprocess.resolve(cfg["postprocess"])
            except Exception as err:  # Hydra's grammar errors, ValueError of the checks: all are "invalid"
                found.append(f"{type(err).__name__}: {err}")
            if found:
                out.setdefault(variant, []).extend(found)
    return out
