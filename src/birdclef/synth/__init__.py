"""SynthCLEF: a synthetic BirdCLEF+ dataset (call families, scenes, the generator) in the competition layout."""

from birdclef.synth.config import PRESETS, SynthConfig, preset_config
from birdclef.synth.generate import generate

__all__ = ["PRESETS", "SynthConfig", "generate", "preset_config"]
