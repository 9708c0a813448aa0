"""Feature extraction: the mel front end shared by caches, models and export, and the waveform/mel caches."""
