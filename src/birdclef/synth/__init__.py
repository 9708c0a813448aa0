"""SynthCLEF: a synthetic BirdCLEF+ dataset (call families, scenes, the generator) in the competition layout."""

from typing import Any

from birdclef.synth.config import PRESETS, SynthConfig, preset_config

__all__ = ["PRESETS", "SynthConfig", "generate", "preset_config"]


def __getattr__(name: str) -> Any:
    # generate pulls in pandas; import it on first use so that worker processes, which only render, start fast
    if name == "generate":
        from birdclef.synth.generator import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
