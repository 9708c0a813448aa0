"""Window scores of a recording of any length, computed block by block so memory stays flat in the duration.

``score_blocks`` takes the audio as a stream of blocks (``audio.decode.stream_audio``) and calls a span scorer on
overlapping spans of whole windows: each span is the block's windows plus a margin of context on both sides, and
only the block's own windows are kept. The span scorer sees, around every kept window, the same samples and the
same chunk grid as a pass over the whole file would (``windows.chunk_starts``), so the scores equal the whole-file
scores (up to the model's batch-size rounding) with memory bounded by one span:

- spans start on a multiple of every chunking's stride (and of the window), so their chunks sit on the grid;
- the margin is at least twice the longest chunk, so no chunk that touches a kept window reaches the span's edge
  (where padding and the appended last chunk differ from the whole file), and a frame-level step such as the
  delta-shift TTA only mixes frames inside the span;
- the number of windows (``ceil((duration - min_tail) / window)``) is known only at the end of the stream, which
  is when the last span is cut or padded to it, as the whole file would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from birdclef import SAMPLE_RATE, WINDOW_SECONDS

SpanScorer = Callable[[np.ndarray, int], Sequence[np.ndarray]]
"""``(wave (samples,) at 32 kHz, n_windows) -> arrays with n_windows rows`` (students' scores, a teacher's rows);
the wave is fitted (padded or cut) to ``n_windows`` windows by the scorer, as ``windows.predict_file`` does."""


def plan(chunkings: Sequence[Mapping[str, float]], block_s: float = 60.0) -> tuple[int, int]:
    """Block and margin lengths, in windows, for members with these chunkings (``windows.predict_file`` kwargs).

    Returns:
        ``(block_windows, margin_windows)``: both multiples of the windows in one stride grid period.
    """
    window = round(WINDOW_SECONDS * SAMPLE_RATE)
    period = window
    for c in chunkings:
        period = math.lcm(period, round(float(c.get("stride_s", WINDOW_SECONDS)) * SAMPLE_RATE))
    unit = period // window  # windows per grid period: spans start on a multiple of it
    longest = max((round(float(c.get("chunk_s", WINDOW_SECONDS)) * SAMPLE_RATE) for c in chunkings), default=window)
    margin = math.ceil(2 * longest / period) * unit
    block = math.ceil(block_s / WINDOW_SECONDS / unit) * unit
    return block, margin


def n_windows_for(n_samples: int, min_tail_s: float) -> int:
    """Windows covering a recording of ``n_samples`` (the last one padded; a tail under ``min_tail_s`` dropped)."""
    return max(1, math.ceil((n_samples / SAMPLE_RATE - min_tail_s) / WINDOW_SECONDS))


def score_blocks(
    blocks: Iterable[np.ndarray], score_span: SpanScorer, block: int, margin: int, min_tail_s: float = 0.1
) -> tuple[list[np.ndarray], int]:
    """Score a stream of audio blocks window by window, holding at most one span of audio.

    Args:
        blocks: (samples,) float32 pieces of one recording at 32 kHz, in order (any sizes).
        score_span: see ``SpanScorer``.
        block, margin: windows kept per span and windows of context on each side (``plan``).
        min_tail_s: a tail shorter than this is not a window.

    Returns:
        ``(per output of score_span, its (n_windows, ...) rows, the recording's length in samples)``.
    """
    window = round(WINDOW_SECONDS * SAMPLE_RATE)
    buf, buf_start, done = np.zeros(0, np.float32), 0, 0  # buf holds samples [buf_start, buf_start + len(buf))
    parts: list[list[np.ndarray]] = []

    def run(lo: int, n: int, upto: int | None) -> None:  # score windows [lo, lo + n) of the buffer, keep some
        outs = score_span(buf[lo * window - buf_start :][: n * window], n)
        for k, rows in enumerate(outs):
            if k == len(parts):
                parts.append([])
            parts[k].append(rows[done - lo : None if upto is None else upto - lo])

    for piece in blocks:
        buf = np.concatenate([buf, np.asarray(piece, dtype=np.float32)]) if len(buf) else np.asarray(piece, np.float32)
        while buf_start + len(buf) >= (done + block + margin) * window:
            lo = max(0, done - margin)
            run(lo, done + block + margin - lo, done + block)
            done += block
            drop = max(0, done - margin) * window - buf_start  # what no later span needs
            buf, buf_start = buf[drop:], buf_start + drop
    total = buf_start + len(buf)
    n_windows = n_windows_for(total, min_tail_s)
    if n_windows > done:
        lo = max(0, done - margin)
        run(lo, n_windows - lo, None)
    return [np.concatenate(p)[:n_windows] for p in parts], total
