"""The `birdclef data synth` command: generate a SynthCLEF dataset in the competition layout."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from birdclef.synth.config import PRESETS
from birdclef.synth.generator import generate


def _parse_overrides(items: tuple[str, ...]) -> dict[str, object]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@click.command(
    "synth",
    help="""Generate SynthCLEF, the synthetic BirdCLEF+ 2025 dataset, into OUT in the Kaggle layout.

    Writes taxonomy.csv, train.csv, train_audio/<label>/*.ogg (32 kHz mono Vorbis), train_soundscapes/ and
    test_soundscapes/ (60 s each), sample_submission.csv, test_labels.csv (truth for a local leaderboard), and
    synth_truth/ (planted calls, voice segments, train soundscape labels, generator parameters) for scoring only.
    The same preset and seed give byte-identical files on one machine.

    \b
    Presets: tiny  (tests; 7 species, seconds to generate)
             demo  (the default dataset; 26 species, ~330 focal files, 64 soundscapes)
             bench (the ablation benchmark: the demo's task, 768 denser test + 32 val soundscapes)
             full  (206 species in the competition's class mix, 1/20 of its files; scale tests)
    """,
)
@click.option("--preset", type=click.Choice(list(PRESETS)), default="demo", show_default=True,
              help="Dataset size and difficulty preset.")
@click.option("--seed", type=int, default=0, show_default=True, help="Master seed.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset directory to create (must be absent or empty unless --overwrite).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel processes. [default: all CPU cores]")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a config knob (YAML value), e.g. --set soundscape.snr_db=[-8,10]. Repeatable.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth_command(preset: str, seed: int, out: Path, workers: int | None, overwrite: bool,
                  overrides: tuple[str, ...], quiet: bool) -> None:
    try:
        summary = generate(preset, seed, out, workers, overrides=_parse_overrides(overrides), overwrite=overwrite,
                           progress=not quiet)
    except (FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(summary, indent=2))
