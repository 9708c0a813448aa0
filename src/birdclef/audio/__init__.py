"""Audio: decoding and resampling to 32 kHz mono, voice activity detection and the cleaning rules."""

from birdclef.audio.decode import AudioError, AudioInfo, audio_info, load_audio, resample

__all__ = ["AudioError", "AudioInfo", "audio_info", "load_audio", "resample"]
