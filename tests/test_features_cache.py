"""Tests of birdclef.features.cache (+ waves): streaming writer, fork-safe reader, builds."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.audio import load_audio
from birdclef.features.cache import CacheItem, WaveCache, WaveCacheWriter, frame_rms
from birdclef.features.waves import FeaturesConfig, build_wave_cache

from audio_fixtures import bird_calls, write_audio


def _write_cache(out: Path, waves: dict[str, np.ndarray], kinds: dict[str, str] | None = None,
                 hop: int = 100) -> Path:
    kinds = kinds or {}
    items = [CacheItem(k, kinds.get(k, "segment"), len(w)) for k, w in waves.items()]
    writer = WaveCacheWriter(out, items, rms_hop=hop, full_scale=2.0)
    for k, w in waves.items():
        writer.write(k, w)
    writer.close()
    return out


@pytest.fixture()
def small(tmp_path: Path) -> tuple[WaveCache, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    waves = {"a": 0.5 * rng.standard_normal(1000).astype(np.float32), "b": np.linspace(-1, 1, 250, dtype=np.float32),
             "s1": 0.1 * rng.standard_normal(777).astype(np.float32)}
    _write_cache(tmp_path / "c", waves, {"s1": "train_soundscape"})
    return WaveCache(tmp_path / "c"), waves


def test_roundtrip_within_one_int16_step(small) -> None:
    cache, waves = small
    step = 2.0 / 32767
    assert cache.keys() == ["a", "b", "s1"]
    assert cache.keys("segment") == ["a", "b"] and cache.keys("train_soundscape") == ["s1"]
    assert cache.keys("test_soundscape") == []
    for k, w in waves.items():
        assert cache.length(k) == len(w)
        got = cache.read(k)
        assert got.dtype == np.float32 and np.abs(got - w).max() <= step / 2 + 1e-7
    np.testing.assert_allclose(cache.read("a", 100, 50), waves["a"][100:150], atol=step)


def test_read_pads_with_zeros_past_either_end(small) -> None:
    cache, waves = small
    tail = cache.read("b", 200, 100)
    assert tail.shape == (100,)
    np.testing.assert_allclose(tail[:50], waves["b"][200:], atol=1e-4)
    assert (tail[50:] == 0).all()
    head = cache.read("b", -10, 20)
    assert (head[:10] == 0).all() and np.allclose(head[10:], waves["b"][:10], atol=1e-4)
    assert (cache.read("b", 1000, 5) == 0).all()
    with pytest.raises(KeyError, match="no key 'zz'"):
        cache.read("zz")


def test_rms_index(small) -> None:
    cache, waves = small
    assert cache.rms_hop == 100
    rms = cache.rms("a")
    assert rms.shape == (10,)
    np.testing.assert_allclose(rms[3], np.sqrt(np.mean(waves["a"][300:400] ** 2)), rtol=1e-5)
    assert cache.rms("s1").shape == (8,)  # 777 samples: the last frame is partial
    np.testing.assert_allclose(frame_rms(np.ones(5, np.float32), 2), [1, 1, 1])


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appears more than once"):
        WaveCacheWriter(tmp_path / "d", [CacheItem("a", "segment", 3), CacheItem("a", "segment", 3)], 10)
    with pytest.raises(ValueError, match="kind 'song'"):
        WaveCacheWriter(tmp_path / "k", [CacheItem("a", "song", 3)], 10)
    w = WaveCacheWriter(tmp_path / "l", [CacheItem("a", "segment", 3)], 10)
    with pytest.raises(ValueError, match="expected 3 samples"):
        w.write("a", np.zeros(4, np.float32))


def test_clipping_is_counted(tmp_path: Path) -> None:
    items = [CacheItem("a", "segment", 4)]
    w = WaveCacheWriter(tmp_path / "c", items, rms_hop=2, full_scale=1.0)
    w.write("a", np.array([0.5, 1.5, -3.0, 0.0], np.float32))
    w.close()
    assert w.clipped == 2
    np.testing.assert_allclose(WaveCache(tmp_path / "c").read("a"), [0.5, 1.0, -1.0, 0.0], atol=1e-4)


def _worker_read(args: tuple[WaveCache, str]) -> float:
    cache, key = args
    return float(cache.read(key, 0, 100).sum())


def test_reader_is_fork_and_pickle_safe(small) -> None:
    cache, _ = small
    expected = float(cache.read("a", 0, 100).sum())  # maps the files in the parent first
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._waves is None and float(clone.read("a", 0, 100).sum()) == expected
    # Forked workers inherit the parent's mapping state and must remap; spawn goes through the pickle above.
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_worker_read, [(cache, "a")] * 4) == [expected] * 4


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    root = tmp_path / "data"
    write_audio(root / "train_audio/x/a.ogg", bird_calls(6.0, 1))
    write_audio(root / "train_audio/x/b.wav", bird_calls(3.0, 2, sr=44_100), sr=44_100)
    write_audio(root / "train_soundscapes/s1.ogg", bird_calls(10.0, 3))
    write_audio(root / "test_soundscapes/t1.flac", bird_calls(10.0, 4))
    (root / "test_soundscapes/broken.ogg").write_bytes(b"junk" * 100)
    seg = pd.DataFrame({"segment_id": ["x/a.ogg@0-2", "x/a.ogg@3.5-6", "x/b.wav@0.25-3"],
                        "path": ["train_audio/x/a.ogg", "train_audio/x/a.ogg", "train_audio/x/b.wav"],
                        "start_s": [0.0, 3.5, 0.25], "end_s": [2.0, 6.0, 3.0]})
    sc = pd.DataFrame({"soundscape_id": ["s1", "t1", "broken"], "split": ["train", "test", "test"],
                       "path": ["train_soundscapes/s1.ogg", "test_soundscapes/t1.flac", "test_soundscapes/broken.ogg"]})
    return root, seg, sc


@pytest.mark.parametrize("workers", [1, 2])
def test_build_wave_cache_matches_direct_decoding(tmp_path: Path, dataset, workers: int) -> None:
    root, seg, sc = dataset
    metrics = build_wave_cache(seg, sc, root, tmp_path / "cache", FeaturesConfig(workers=workers, rms_hop=3200))
    cache = WaveCache(tmp_path / "cache")
    assert cache.keys() == [*seg.segment_id, "t1", "s1"]
    assert cache.kind("t1") == "test_soundscape" and cache.kind("s1") == "train_soundscape"
    for row in seg.itertuples():
        ref = load_audio(root / row.path, row.start_s, row.end_s)
        assert np.abs(cache.read(row.segment_id) - ref).max() < 1e-4
    assert cache.length("s1") == 320_000 and cache.rms("s1").shape == (100,)
    assert metrics["keys_segment"] == 3 and metrics["keys_test_soundscape"] == 1 and metrics["failed"] == 1
    assert pd.read_csv(tmp_path / "cache/failed.csv").to_dict("records") == [
        {"key": "broken", "path": "test_soundscapes/broken.ogg", "reason": "unsupported"}]


def test_build_fail_mode_and_split_filter(tmp_path: Path, dataset) -> None:
    root, seg, sc = dataset
    from birdclef.audio import AudioError

    with pytest.raises(AudioError, match="broken.ogg"):
        build_wave_cache(seg, sc, root, tmp_path / "f", FeaturesConfig(workers=1, on_bad="fail"))
    build_wave_cache(seg, sc, root, tmp_path / "t", FeaturesConfig(workers=1, soundscape_splits=("train",)))
    assert WaveCache(tmp_path / "t").keys("test_soundscape") == []
    for removed in ("hop", "cache_mel", "mel_dtype"):  # cache_mel, mel_dtype: the mel caches nothing read are gone
        with pytest.raises(ValueError, match=rf"unknown key\(s\) \['{removed}'\]"):
            FeaturesConfig.from_params({removed: 3})



def _rss_mb() -> float:
    """This process's current resident set in MB (file-backed pages included), from /proc/self/statm."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_reading_every_key_does_not_grow_resident_memory(tmp_path: Path) -> None:
    # 48 one-second-rate "soundscapes" of 1 M samples (96 MB int16): read through a memory map, every page read
    # stayed resident (RSS +96 MB, +37 GB for the competition's soundscapes); positional reads keep it flat.
    n, length = 48, 1_000_000
    items = [CacheItem(f"s{i}", "train_soundscape", length) for i in range(n)]
    writer = WaveCacheWriter(tmp_path / "big", items, rms_hop=3200)
    wave = np.full(length, 0.01, np.float32)
    for it in items:
        writer.write(it.key, wave)
    writer.close()
    cache = WaveCache(tmp_path / "big")
    cache.read("s0", 0, 10)  # opens the files: what follows is the reads alone
    before = _rss_mb()
    total = sum(float(cache.read(k)[::1000].sum()) + float(cache.rms(k).sum()) for k in cache.keys("train_soundscape"))
    assert total > 0
    assert _rss_mb() - before < 24, "reading the whole cache left its pages in this process's resident set"
