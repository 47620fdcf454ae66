"""The video engine: one frame of an MP4, MOV, Matroska (and WebM), AVI or MPEG-TS file, through PyAV.

Only the file handle the caller opened is read: PyAV reads it through Python, so no URL,
protocol (``http:``, ``concat:``, ``file:``) or playlist in the file is ever followed; the
demuxer is pinned from the sniffed format, QuickTime data references are off, and any
attempt of a demuxer to open a second file is refused.

Which frame:

- ``frame T`` is the frame on screen at T seconds from the start, as a player paused at T
  shows it: the last frame whose timestamp is at or before T. ``frame P%`` is T = P % of
  the duration (a file whose duration is unknown cannot answer a percentage).
- With no ``frame`` step the frame at 10 % of the duration (0 s when the duration is
  unknown): opening seconds are often black or a fade-in, and 10 % is what
  ffmpegthumbnailer and most file browsers show.
- A T past the end gives the last frame, so ``frame 2`` in a template works for a clip
  shorter than 2 s and ``frame 100%`` is the last picture.

The decoder seeks to the keyframe at or before T and decodes forward, at most
:data:`MAX_DECODED_FRAMES` frames and :data:`MAX_DECODE_SECONDS` seconds, or the job's
``max_processing_seconds`` when that is shorter (a file with very few keyframes would
otherwise cost minutes); past either bound the job fails with a :class:`LimitError`.

The result is upright and in display proportions: non-square pixels are stretched to the
stream's sample aspect ratio (width x SAR, height kept), and a display rotation in the
file (phones record landscape and store "turn 90 degrees") is applied in quarter turns.
:func:`probe_native` reads the same facts from headers (the rotation, by :mod:`.containers`, from the MP4/MOV
track header or the Matroska projection element, as FFmpeg does; the pixel shape from the
container, or from the codec's header when the container does not say), so the predicted
size is the size of the result. That takes FFmpeg's demuxers, so the registrar runs it in a
worker, as for a camera raw file: PyAV is imported only where video is read, never by a web
process that registers it. Mirrored display matrices are not applied.

AVI files with B-frames (DivX, Xvid) carry no presentation times; FFmpeg guesses them one
frame late, so there the frame returned can be the one before the frame at T.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any, BinaryIO

from PIL import Image

from ..errors import LimitError, ProcessingError
from ..operations import reduction_target
from . import containers
from .native import NativeLibrary

if TYPE_CHECKING:
    import av

FORMATS = frozenset({"MP4", "MOV", "MKV", "AVI", "TS"})
_PYAV = NativeLibrary("av")
DEFAULT_PERCENT = 10.0
MAX_DECODED_FRAMES = 1500
MAX_DECODE_SECONDS = 20.0

# The demuxer for each sniffed name, and its options: nothing is left to FFmpeg's probing.
_DEMUXERS = {"MP4": "mov", "MOV": "mov", "MKV": "matroska", "AVI": "avi", "TS": "mpegts"}
_OPTIONS = {
    # Data references would make the mov demuxer open other files named inside this one.
    "mov": {"enable_drefs": "0", "use_absolute_path": "0"},
    "matroska": {},
    "avi": {},
    "mpegts": {},
}
# Codec threads. Frame threading delays each picture by a frame per thread, which a job
# that seeks and decodes a few frames pays for, and a server runs several jobs at once.
# Frame at 2 s of a 1080p H.264 file on 2 cores: 1 thread 334 ms, 2: 199 ms, 4: 251 ms,
# FFmpeg's automatic count: 265 ms.
_THREADS = 2
# Sample aspect ratios outside this range are broken headers, not anamorphic video.
_SAR_RANGE = (Fraction(1, 8), Fraction(8))
# Quarter turns (counter-clockwise, as FFmpeg's display rotation counts) to Pillow's.
_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def available() -> dict[str, bool]:
    return {"video": _PYAV.installed()}


def load() -> None:
    _PYAV.load()


def _av() -> Any:
    return _PYAV.get()


def probe(handle: BinaryIO, found: str, reference: str, instructions=None, config=None) -> None:
    """None: the size is FFmpeg's to read (:func:`probe_native`, run in a worker)."""
    return None


def probe_native(
    handle: BinaryIO, found: str, reference: str, instructions=None, config=None
) -> tuple[int, int, bool]:
    upright, coded, _ = _header_sizes(handle, found, reference)
    if config is not None:
        _check_source_pixels(*coded, reference, config)
    return (*upright, False)


def decode(handle: BinaryIO, found: str, reference: str, instructions, config):
    upright, coded, rotation = _header_sizes(handle, found, reference)
    _check_source_pixels(*coded, reference, config)
    config.check_plan(instructions.plan(*upright))
    # The frame is scaled to the display size the headers give, the one the registrar
    # promised: a decoder's own idea of the picture size (cropping, an edit list, a
    # codec header that disagrees with the container) can differ from it by a pixel.
    display = upright[::-1] if rotation in (90, 270) else upright
    with _opened(handle, found, reference) as container:
        stream, _ = _video_stream(container, reference)
        target = _target_pts(instructions.frame, stream, container, reference)
        budget = min(MAX_DECODE_SECONDS, config.max_processing_seconds)
        frame = _frame_at(container, stream, target, reference, budget, seekable=found != "TS")
        return _picture(frame, display, reference, instructions, config), None, upright


def _header_sizes(
    handle: BinaryIO, found: str, reference: str
) -> tuple[tuple[int, int], tuple[int, int], int]:
    """``(upright display size, coded size, rotation)`` of the first video stream, from
    headers: the one computation the registrar's promise and the decode share."""
    # The container's headers first; only when they are silent on the pixel shape does
    # FFmpeg read the codec's own header, which costs decoding one frame.
    for headers_only in (True, False):
        with _opened(handle, found, reference, headers_only=headers_only) as container:
            stream, ordinal = _video_stream(container, reference)
            if headers_only and stream.sample_aspect_ratio is None:
                continue
            coded = stream.codec_context.width, stream.codec_context.height
            display = _display_size(stream, *coded, reference)
            track = stream.id
            break
    rotation = containers.header_rotation(handle, found, track, ordinal)
    return (display[::-1] if rotation in (90, 270) else display), coded, rotation


@contextlib.contextmanager
def _opened(
    handle: BinaryIO, found: str, reference: str, *, headers_only: bool = False
) -> Iterator[av.container.InputContainer]:
    """The container, demuxer pinned; ``headers_only`` skips FFmpeg's look at the first
    packets (which decodes a frame: 10 ms at 1080p), leaving facts only codecs know unset."""
    demuxer = _DEMUXERS[found]
    options = dict(_OPTIONS[demuxer])
    av = _av()
    if headers_only:
        options["probesize"] = "32"
    handle.seek(0)
    try:
        container = av.open(
            handle,
            "r",
            format=demuxer,
            options={"skip_frame": "all"} if headers_only else None,
            container_options=options,
            io_open=_refuse_other_files,
            # Titles and tags are never shown: one that is not UTF-8 must not stop the picture.
            metadata_errors="replace",
        )
    except (av.FFmpegError, PermissionError) as error:
        raise _unreadable(reference, error) from None
    with container:
        try:
            yield container
        except (av.FFmpegError, PermissionError) as error:
            raise _unreadable(reference, error) from None


def _refuse_other_files(url: str, flags: int, options: dict):
    raise PermissionError("the file refers to another file or URL, which is never opened")


def _unreadable(reference: str, error: Exception) -> ProcessingError:
    # strerror only: str(error) of an FFmpegError ends with the server-side file name.
    reason = getattr(error, "strerror", None) or str(error)
    return ProcessingError(f"source {reference!r} is not a readable video ({reason})")


def _video_stream(container, reference: str):
    """The first real video stream (not cover art) and its position among video streams."""
    av = _av()
    undecodable = False
    for ordinal, stream in enumerate(container.streams.video):
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        if stream.codec_context is None:  # FFmpeg here has no decoder for its codec
            undecodable = True
            continue
        stream.thread_type = "AUTO"
        stream.thread_count = _THREADS
        return stream, ordinal
    if undecodable:
        raise ProcessingError(f"source {reference!r} has video in a codec this server's FFmpeg cannot decode")
    raise ProcessingError(f"source {reference!r} has no video stream")


def _sample_aspect(stream) -> Fraction:
    sar = stream.sample_aspect_ratio
    return sar if sar and _SAR_RANGE[0] <= sar <= _SAR_RANGE[1] else Fraction(1)


def _display_size(stream, width: int, height: int, reference: str) -> tuple[int, int]:
    """Coded size stretched to square pixels: width x SAR, height kept (as players do)."""
    if width < 1 or height < 1:
        raise ProcessingError(f"source {reference!r} has a video stream without a picture size")
    return max(1, round(width * _sample_aspect(stream))), height


def _check_source_pixels(width: int, height: int, reference: str, config) -> None:
    if width * height > config.max_source_pixels:
        raise LimitError(
            f"source {reference!r} has {width}x{height} = {width * height} pixels per frame, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )


# --------------------------------------------------------------------------- which frame


def _target_pts(step, stream, container, reference: str) -> int:
    """The timestamp, in the stream's time base, of the moment to show.

    Exact fractions: 3.3 s is 33792 ticks of 1/10240 s, where floats make it 33791.99...
    and so the frame before.
    """
    if step is not None and step.seconds is not None:
        seconds = Fraction(str(step.seconds))
    else:
        duration = _duration(stream, container)
        if duration is None:
            if step is not None:
                raise ProcessingError(
                    f"frame {step.percent:g}%: the duration of {reference!r} is unknown; "
                    "give the time in seconds"
                )
            seconds = Fraction(0)
        else:
            percent = DEFAULT_PERCENT if step is None else step.percent
            seconds = duration * Fraction(str(percent)) / 100
    start = stream.start_time or 0
    # Capped so that an absurd T cannot overflow FFmpeg's 64-bit timestamps.
    return start + math.floor(min(seconds, Fraction(10**9)) / stream.time_base)


def _duration(stream, container) -> Fraction | None:
    if stream.duration and stream.duration > 0:
        return stream.duration * stream.time_base
    if container.duration and container.duration > 0:
        return Fraction(container.duration, 1_000_000)  # AV_TIME_BASE
    return None


def _frame_at(container, stream, target: int, reference: str, budget: float, *, seekable: bool = True):
    """The frame on screen at ``target``: seek to the keyframe at or before it, decode on.

    The demuxers index keyframes by decoding time, so with B-frames the keyframe found can
    show later than ``target``; then, and when a file cut short has no data left after
    that keyframe, the seek is repeated further back (1 s, 2 s, 4 s ... down to the start).
    A transport stream has no index (FFmpeg's seek in one lands where no frame follows):
    it is decoded from the start, within the same bounds.
    """
    deadline = time.monotonic() + budget
    start = stream.start_time or 0
    av = _av()
    step_back = round(1 / stream.time_base)  # one second
    decoded = 0
    position = target if seekable else start
    while True:
        if seekable and (position > start or position != target):
            try:
                container.seek(max(position, start), stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                if position != target:
                    raise
                position = start  # a file without an index: nothing read yet, decode from the start
        shown = None
        for frame in _frames(container, stream):
            decoded += 1
            if decoded > MAX_DECODED_FRAMES or time.monotonic() > deadline:
                bound = (
                    f"{MAX_DECODED_FRAMES} decoded frames"
                    if decoded > MAX_DECODED_FRAMES
                    else f"{budget:g} seconds of decoding"
                )
                raise LimitError(
                    f"source {reference!r}: reaching the frame asked for needs more than {bound}"
                )
            pts = frame.pts
            if pts is not None and pts > target:
                if shown is not None or position <= start:
                    return frame if shown is None else shown
                break  # landed past the target: look further back
            shown = frame
            if pts is not None and frame.duration and pts + frame.duration > target:
                return frame
        else:
            if shown is not None:
                return shown  # the data ended first: the last frame there is
            if position <= start:
                raise ProcessingError(f"source {reference!r} has no decodable video frame")
            # Nothing decodable after the keyframe found (a file cut short): look further back.
        position = max(start, position - step_back)
        step_back *= 2


def _frames(container, stream):
    av = _av()
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue  # a damaged packet: players skip it, and so does this
        yield from frames


# --------------------------------------------------------------------------- to a picture


def _picture(frame, display: tuple[int, int], reference: str, instructions, config) -> Image.Image:
    """The frame as an upright RGB image of the ``display`` size (before turning),
    no larger than the operations need."""
    _check_source_pixels(frame.width, frame.height, reference, config)
    rotation = round(frame.rotation / 90) % 4 * 90
    upright = display[::-1] if rotation in (90, 270) else display
    size = display
    target = reduction_target(instructions.operations, *upright)
    if target:
        # Twice the detail the operations keep, so Pillow's final Lanczos pass has room.
        scale = 2 * target[0] / upright[0]
        if scale < 1:
            size = (max(1, round(display[0] * scale)), max(1, round(display[1] * scale)))
    rgb = frame.reformat(
        width=size[0],
        height=size[1],
        format="rgb24",
        interpolation="AREA",
        src_color_range=frame.color_range,
        dst_color_range="JPEG",
    )
    image = rgb.to_image()
    return image.transpose(_TURNS[rotation]) if rotation else image
