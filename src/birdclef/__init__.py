"""birdclef: a reproducible DVC + MLflow pipeline for BirdCLEF+ soundscape species identification."""

__version__ = "0.1.0"

SAMPLE_RATE = 32_000
"""Sample rate (Hz) of every waveform inside the pipeline, as in the competition data."""

WINDOW_SECONDS = 5
"""Length (s) of one scored window of a soundscape."""
