"""Feature extraction: the mel front end shared by models and export, and the waveform cache."""
