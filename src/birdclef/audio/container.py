"""Byte-level checks of audio containers that libsndfile cannot make: a cut Ogg stream, a WAV header that declares
more frames than the file holds, an ID3v2 tag whose size lies. Nothing is decoded.

``decode`` uses them to tell a truncated file from a whole one and ``data.probe`` to report files at acquisition.
"""

from __future__ import annotations

import os

_OGG_TAIL_BYTES = 65_307  # the largest Ogg page: 27-byte header + 255 lacing values + 255 * 255 body bytes


def ogg_tail_problem(path: str | os.PathLike[str]) -> str:
    """Why an Ogg file's end shows a cut (``""`` when it ends with a whole end-of-stream page).

    The pages of the last 64 KiB are walked; a candidate page counts only when the next page (or the end of the
    file) follows it exactly, so "OggS" bytes inside compressed data are not taken for a header. libsndfile reports a
    cut Ogg's length as what it can decode, so a frame-count comparison cannot see the cut (``data.probe`` uses this
    for the acquire stage too).
    """
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - _OGG_TAIL_BYTES))
        tail = f.read()
    pos, last_flags, cut = tail.find(b"OggS"), None, False
    while pos >= 0:
        end = None
        if len(tail) - pos >= 27 and tail[pos + 4] == 0:  # stream structure version is always 0
            lacing = tail[pos + 27 : pos + 27 + tail[pos + 26]]
            end = len(tail) + 1 if len(lacing) < tail[pos + 26] else pos + 27 + len(lacing) + sum(lacing)
        nxt = -1 if end is None else tail.find(b"OggS", min(end, len(tail)))
        if end is not None and end <= len(tail) and (end == len(tail) or nxt in (end, -1)):
            last_flags, cut, pos = tail[pos + 5], False, nxt
            continue
        cut = cut or (end is not None and end > len(tail))
        pos = tail.find(b"OggS", pos + 1)
    if last_flags is None or cut:
        return "the last Ogg page is cut"
    if not last_flags & 0x04:
        return "the last Ogg page lacks the end-of-stream flag"
    return ""


def wav_declared_frames(path: str | os.PathLike[str]) -> int | None:
    """Frames the RIFF header's data chunk declares, or None when the header cannot be read that way."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while f.tell() + 8 <= size:
            cid, csize = f.read(4), int.from_bytes(f.read(4), "little")
            if cid == b"fmt ":
                fmt = f.read(csize + (csize & 1))
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
            elif cid == b"data":
                # streaming writers leave the size unset (0xFFFFFFFF)
                return csize // block_align if block_align and csize != 0xFFFFFFFF else None
            else:
                f.seek(csize + (csize & 1), 1)
    return None


def id3_problem(path: str | os.PathLike[str]) -> str:
    """What is wrong with an ID3v2 tag at the head of ``path`` (``""``: none, or a tag that is right).

    The tag's header gives its size; the MPEG audio must start right after it. A size past the end of the file,
    or one that lands where no MPEG frame starts, makes libmpg123 miss the audio ("possibly a pipe?" or a
    partial decode), so the message says the header lies instead.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(10)
            if len(head) < 10 or head[:3] != b"ID3":
                return ""
            tag = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + (10 * bool(head[5] & 0x10))
            f.seek(min(tag, size))
            sync = f.read(4)
    except OSError:
        return ""
    if tag > size:
        return f"its ID3v2 header claims a {tag}-byte tag in a {size}-byte file: the tag header lies"
    if sync[:3] != b"ID3" and not (len(sync) >= 2 and sync[0] == 0xFF and sync[1] & 0xE0 == 0xE0):
        return f"its ID3v2 header puts the audio at byte {tag}, where no MPEG frame starts: the tag header lies"
    return ""
