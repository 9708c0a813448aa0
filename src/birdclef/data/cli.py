"""`birdclef data kaggle`: the click command that brings a competition download into the data root."""

from __future__ import annotations

from pathlib import Path

import click

from birdclef.data.ingest import ingest_kaggle
from birdclef.data.layout import LayoutError, TableError


@click.command("kaggle")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--extra", "extra", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Extra source folder (metadata CSV with primary_label, filename + audio); repeatable.")
@click.option("--dest", default="data", show_default=True, type=click.Path(path_type=Path),
              help="Data root to create (the folder data.dvc tracks).")
@click.option("--force", is_flag=True, help="Replace a non-empty destination.")
@click.option("--val-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Labelled-soundscape CSV (submission format): its soundscapes become the validation split "
                   "(val_soundscapes/ + val_labels.csv) for per-epoch scores and ensemble weights.")
def kaggle_command(path: Path, extra: tuple[Path, ...], dest: Path, force: bool, val_labels: Path | None) -> None:
    """Bring the BirdCLEF+ competition download PATH (zip or extracted folder) into the data root."""
    try:
        summary = ingest_kaggle(path, dest, list(extra), force=force, val_labels=val_labels)
    except (LayoutError, TableError, FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        f"{summary['dest']}: {summary['species']} species, {summary['train_rows']} train.csv rows, "
        f"{summary['train_audio_files']} train_audio files, {summary['train_soundscapes']} train, "
        f"{summary['test_soundscapes']} test and {summary['val_soundscapes']} labelled validation soundscapes "
        f"(from a {summary['source']})"
    )
    for name, rows in summary["extra"].items():
        click.echo(f"extra source {name!r}: {rows} rows in {dest}/extra/{name}/")
    click.echo("\nNext steps:")
    if summary["extra"]:
        names = ", ".join(["train_audio", *summary["extra"]])
        click.echo(f"  # read the extra sources: set acquire.sources: [{names}] in params.yaml")
    click.echo(f"  dvc add {dest}\n  git add {dest}.dvc\n  dvc push")
