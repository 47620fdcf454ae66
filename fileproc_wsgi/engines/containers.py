"""The display rotation of a video, read from its container's headers.

FFmpeg attaches a rotation to decoded frames from the MP4/MOV track header's matrix
(``tkhd``) or from a Matroska track's projection element; PyAV does not expose a stream's
side data, so the video engine reads the same fields here, with :mod:`struct`, bounded in
the number of boxes and elements it walks. Anything unreadable is no rotation.
"""

from __future__ import annotations

import math
import struct
from typing import BinaryIO


def header_rotation(handle: BinaryIO, found: str, track: int, ordinal: int) -> int:
    """The display rotation FFmpeg will attach to decoded frames, in quarter-turn degrees,
    read from the container's headers (PyAV does not expose a stream's side data)."""
    try:
        if found in ("MP4", "MOV"):
            return _mov_rotation(handle, track)
        if found == "MKV":
            return _matroska_rotation(handle, ordinal)
    except (OSError, struct.error, ValueError):
        pass  # headers FFmpeg accepted but this reader cannot follow: assume upright
    return 0


def _rotation_of(a: float, b: float, c: float, d: float) -> int:
    """FFmpeg's ``av_display_rotation_get`` for the matrix [a b; c d], to a quarter turn."""
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if not scale_x or not scale_y:
        return 0
    degrees = -math.degrees(math.atan2(b / scale_y, a / scale_x))
    return round(degrees / 90) % 4 * 90


_MAX_BOXES = 10_000


def _boxes(handle: BinaryIO, start: int, end: int):
    """``(type, body_start, body_end)`` of the ISO-BMFF boxes between two offsets."""
    position = start
    for _ in range(_MAX_BOXES):
        if end - position < 8:
            return
        handle.seek(position)
        size, kind = struct.unpack(">I4s", handle.read(8))
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", handle.read(8))
            header = 16
        elif size == 0:
            size = end - position
        if size < header:
            return
        yield kind, position + header, min(position + size, end)
        position += size


def _matrix(handle: BinaryIO, body: int, offsets: tuple[int, int]) -> tuple[int, int, int, int]:
    """The first four entries (a, b, c, d) of a ``mvhd``/``tkhd`` matrix, by box version."""
    handle.seek(body)
    version = handle.read(1)[0]
    handle.seek(body + offsets[1 if version == 1 else 0])
    a, b, _, c, d = struct.unpack(">5i", handle.read(20))
    return a, b, c, d


def _mov_rotation(handle: BinaryIO, track: int) -> int:
    end = handle.seek(0, 2)
    moov = next(((s, e) for kind, s, e in _boxes(handle, 0, end) if kind == b"moov"), None)
    if moov is None:
        return 0
    movie = (65536, 0, 0, 65536)
    for kind, body, body_end in _boxes(handle, *moov):
        if kind == b"mvhd":
            movie = _matrix(handle, body, (36, 48))
        elif kind == b"trak":
            for inner, start, _ in _boxes(handle, body, body_end):
                if inner != b"tkhd":
                    continue
                handle.seek(start)
                version = handle.read(1)[0]
                handle.seek(start + (20 if version == 1 else 12))
                (track_id,) = struct.unpack(">I", handle.read(4))
                if track_id == track:
                    a, b, c, d = _matrix(handle, start, (40, 52))
                    ma, mb, mc, md = movie
                    # FFmpeg shows the track matrix combined with the movie's.
                    return _rotation_of(a * ma + b * mc, a * mb + b * md, c * ma + d * mc, c * mb + d * md)
    return 0


# Matroska element IDs (with their length-marker bits, as the specification writes them).
_SEGMENT, _TRACKS, _CLUSTER = 0x18538067, 0x1654AE6B, 0x1F43B675
_TRACK_ENTRY, _TRACK_TYPE, _VIDEO, _PROJECTION = 0xAE, 0x83, 0xE0, 0x7670
_POSE = {0x7673: "yaw", 0x7674: "pitch", 0x7675: "roll"}


def _vint(handle: BinaryIO, keep_marker: bool) -> tuple[int | None, int]:
    first = handle.read(1)[0]
    length = 9 - first.bit_length()
    if length > 8:
        raise ValueError("bad EBML number")
    value = first if keep_marker else first & (0xFF >> length)
    rest = handle.read(length - 1)
    for byte in rest:
        value = value << 8 | byte
    if not keep_marker and value == (1 << 7 * length) - 1:
        return None, length  # unknown size (live recordings)
    return value, length


def _elements(handle: BinaryIO, start: int, end: int):
    """``(id, body_start, body_end)`` of the EBML elements between two offsets."""
    position = start
    for _ in range(_MAX_BOXES):
        if position >= end:
            return
        handle.seek(position)
        element, id_length = _vint(handle, keep_marker=True)
        size, size_length = _vint(handle, keep_marker=False)
        body = position + id_length + size_length
        body_end = end if size is None else min(body + size, end)
        yield element, body, body_end
        position = body_end


def _matroska_rotation(handle: BinaryIO, ordinal: int) -> int:
    end = handle.seek(0, 2)
    segment = next(((s, e) for element, s, e in _elements(handle, 0, end) if element == _SEGMENT), None)
    if segment is None:
        return 0
    tracks = None
    for element, body, body_end in _elements(handle, *segment):
        if element == _TRACKS:
            tracks = (body, body_end)
            break
        if element == _CLUSTER:
            return 0  # muxers write the tracks before the first cluster
    if tracks is None:
        return 0
    videos = -1
    for element, body, body_end in _elements(handle, *tracks):
        if element != _TRACK_ENTRY:
            continue
        children = {element: (s, e) for element, s, e in _elements(handle, body, body_end)}
        if _TRACK_TYPE not in children or _uint(handle, *children[_TRACK_TYPE]) != 1:
            continue
        videos += 1
        if videos != ordinal:
            continue
        pose = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}
        for video_child, s, e in _elements(handle, *children.get(_VIDEO, (0, 0))):
            if video_child == _PROJECTION:
                for element_id, ps, pe in _elements(handle, s, e):
                    if element_id in _POSE:
                        handle.seek(ps)
                        data = handle.read(pe - ps)
                        pose[_POSE[element_id]] = struct.unpack(">f" if len(data) == 4 else ">d", data)[0]
        return _projection_rotation(**pose)
    return 0


def _uint(handle: BinaryIO, start: int, end: int) -> int:
    handle.seek(start)
    return int.from_bytes(handle.read(min(end - start, 8)), "big")


def _projection_rotation(yaw: float, pitch: float, roll: float) -> int:
    """The rotation FFmpeg's Matroska demuxer derives from a projection pose."""
    if pitch != 0 or yaw not in (0.0, 180.0, -180.0) or math.isnan(roll):
        return 0  # not a flat picture: FFmpeg ignores it too
    hflip = yaw != 0
    radians = -math.radians(roll * (2 * hflip - 1))  # av_display_rotation_set
    a, b, c, d = math.cos(radians), -math.sin(radians), math.sin(radians), math.cos(radians)
    if hflip:
        a, c = -a, -c
    return _rotation_of(a, b, c, d)
