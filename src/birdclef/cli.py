"""The `birdclef` command for humans: data, predict, bundle, repro, ablate, report, lb."""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use (torch, mlflow and GX are slow to import)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].rsplit(":", 1)
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    lazy={
        "predict": "birdclef.infer.predict:predict_command",
        "bundle": "birdclef.infer.bundle:bundle_command",
        "repro": "birdclef.track.pipeline:repro_command",
        "ablate": "birdclef.track.ablate:ablate_command",
        "report": "birdclef.track.report:report_command",
        "lb": "birdclef.track.ledger:lb_group",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="birdclef")
def main() -> None:
    """Species identification in rainforest soundscapes (BirdCLEF+ 2025), as a reproducible DVC + MLflow pipeline.

    \b
    Typical session:
      birdclef data synth --preset demo --out data   # or: birdclef data kaggle birdclef-2025.zip
      dvc repro                                      # or: birdclef repro (one MLflow parent run)
      birdclef predict recordings/ --out predictions/
    """


@main.group(
    cls=LazyGroup,
    lazy={"synth": "birdclef.synth.cli:synth_command", "kaggle": "birdclef.data.cli:kaggle_command"},
)
def data() -> None:
    """Create or bring in the raw dataset (the competition layout under data/)."""


if __name__ == "__main__":
    main()
