"""The JPEG XL engine: JXL sources through pillow-jxl-plugin (libjxl, bundled in its wheels).

**Headers without the decoder.** The plugin decodes every pixel as it opens a file, and
importing it registers its opener in Pillow for the whole process. So the size promised at
registration comes from this module's own reading of the codestream header (ISO/IEC
18181-1: ``SizeHeader`` and the start of ``ImageMetadata``, a few dozen bits), in the bare
codestream (``FF 0A``) or inside the container's ``jxlc``/``jxlp`` box, which costs
microseconds and loads no native code: the web process never imports the plugin, only a
worker does, on its first JXL.

**Orientation.** JPEG XL stores the orientation in the codestream header, and that is the
one that counts (an ``Exif`` box may say otherwise; readers ignore it). libjxl applies it
when it decodes pixels, so those come upright; a JPEG losslessly recompressed into JXL is
given back as the original JPEG (bit-exact, through the ``jbrd`` box), stored as the sensor
lay, and is turned here by the codestream's orientation. Either way no picture turns twice,
and the size decoded is checked against the size the header gave.

**Limits.** libjxl decodes at full size only (no scaled decode in the plugin), so the pixel
limit is checked on the header before the decoder sees the file. An animated JXL gives its
first frame (the plugin reads no other), and ``page`` beyond 1 is refused.

**Colour.** The ICC profile travels with the image: the one in the file, or the one libjxl
describes for an enumerated colour space. 16-bit samples are brought to 8 bits.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from .. import formats
from ..errors import FileProcError, LimitError, ProcessingError
from .boundary import reason
from .native import NativeLibrary
from .raster import TRANSPOSE, TRANSPOSED, normalise

FORMATS = frozenset({"JXL"})
_CODESTREAM = b"\xff\x0a"
_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# How far into a container the codestream's first box may start: past an Exif or XMP box
# written before it. The header itself is a few dozen bytes.
_SEARCH_BYTES = 1 << 20
# SizeHeader: xsize from ysize by a ratio code (18181-1, table "SizeHeader").
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


# Found without importing it: the import registers the plugin's opener in Pillow.
_PILLOW_JXL = NativeLibrary("pillow_jxl", "JpegXLImagePlugin")


def available() -> dict[str, bool]:
    return {"jxl": _PILLOW_JXL.installed()}


def load() -> None:
    _PILLOW_JXL.load()


def _plugin() -> Any:
    return _PILLOW_JXL.get().JpegXLImagePlugin


class _Bits:
    """A reader of the codestream's bits, least significant first (18181-1, 4.2)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "little")
        self.size = 8 * len(data)
        self.position = 0

    def read(self, count: int) -> int:
        if self.position + count > self.size:
            raise ValueError("header cut short")
        found = (self.value >> self.position) & ((1 << count) - 1)
        self.position += count
        return found

    def u32(self, *choices: tuple[int, int]) -> int:
        """``U32``: two bits pick one of four (offset, bits) distributions."""
        offset, bits = choices[self.read(2)]
        return offset + (self.read(bits) if bits else 0)


def _size(bits: _Bits) -> tuple[int, int]:
    """A ``SizeHeader``: the image's stored size, before its orientation."""
    large = ((1, 9), (1, 13), (1, 18), (1, 30))
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else bits.u32(*large)
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = _RATIOS[ratio]
        return height * numerator // denominator, height
    return ((bits.read(5) + 1) * 8 if small else bits.u32(*large)), height


def _preview(bits: _Bits) -> None:
    """Skip a ``PreviewHeader``."""
    div8 = bits.read(1)
    one = ((16, 0), (32, 0), (1, 5), (33, 9)) if div8 else ((1, 6), (65, 8), (321, 10), (1345, 12))
    bits.u32(*one)
    if bits.read(3) == 0:
        bits.u32(*one)


def _bit_depth(bits: _Bits) -> None:
    if bits.read(1):  # floating point samples
        bits.u32((32, 0), (16, 0), (24, 0), (1, 6))
        bits.read(4)
    else:
        bits.u32((8, 0), (10, 0), (12, 0), (1, 6))


def _has_alpha(bits: _Bits) -> bool:
    """Whether any ``ExtraChannelInfo`` after ``bit_depth`` describes an alpha channel."""
    _bit_depth(bits)
    bits.read(1)  # modular_16bit_buffers
    count = bits.u32((0, 0), (1, 0), (2, 4), (1, 12))
    for _ in range(count):
        if bits.read(1):  # all default: an alpha channel
            return True
        kind = bits.u32((0, 0), (1, 0), (2, 4), (18, 6))
        if kind == 0:
            return True
        _bit_depth(bits)
        bits.u32((0, 0), (3, 0), (4, 0), (1, 3))  # dim_shift
        name = bits.u32((0, 0), (0, 4), (16, 5), (48, 10))
        bits.read(8 * name)
        if kind == 2:  # spot colour: four 16-bit floats
            bits.read(64)
        elif kind == 5:  # colour filter array
            bits.u32((1, 0), (0, 2), (3, 4), (19, 8))
    return False


def header(data: bytes) -> tuple[int, int, int, bool]:
    """``(width, height, orientation, has_alpha)`` from a codestream's first bytes; the
    size is the stored one, before the orientation (1 to 8, as in EXIF) turns it."""
    bits = _Bits(data[2:64])
    width, height = _size(bits)
    if bits.read(1):  # all_default: upright, 8 bits, no extra channel
        return width, height, 1, False
    orientation = 1
    if bits.read(1):  # extra_fields
        orientation = 1 + bits.read(3)
        if bits.read(1):  # an intrinsic size, for display only
            _size(bits)
        if bits.read(1):
            _preview(bits)
        if bits.read(1):  # animation: timing and loops, then whether it has timecodes
            bits.u32((100, 0), (1000, 0), (1, 10), (1, 30))
            bits.u32((1, 0), (1001, 0), (1, 8), (1, 10))
            bits.u32((0, 0), (0, 3), (0, 16), (0, 32))
            bits.read(1)
    return width, height, orientation, _has_alpha(bits)


def codestream_start(data: bytes) -> bytes:
    """The first bytes of the codestream of a JXL file, bare or in its container."""
    if data.startswith(_CODESTREAM):
        return data[:64]
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        start = at + 8
        if size == 1:  # a 64-bit size follows the type
            if at + 16 > len(data):
                break
            (size,) = struct.unpack(">Q", data[start : start + 8])
            start += 8
        if kind == b"jxlc":
            return data[start : start + 64]
        if kind == b"jxlp":
            return data[start + 4 : start + 68]  # after the part's index
        if size == 0:  # the last box, to the end of the file
            break
        if size < start - at:
            raise ValueError(f"a box of {size} bytes")
        at += size
    raise ValueError("no codestream within the first MiB")


def _read_header(handle, reference: str) -> tuple[int, int, int, bool]:
    data = handle.read(_SEARCH_BYTES)
    handle.seek(0)
    try:
        return header(codestream_start(data))
    except ValueError as error:
        raise ProcessingError(f"source {reference!r} is not a readable JPEG XL image ({error})") from None


def _upright(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in TRANSPOSED else (width, height)


def _check(reference: str, width: int, height: int, instructions, config) -> None:
    page = instructions.page if instructions is not None else None
    if config is not None:
        config.check_page(page)
    if page and page > 1:
        raise ProcessingError(f"page {page}: {reference!r} has only 1 page(s)")
    if config is not None and width * height > config.max_source_pixels:
        raise LimitError(
            f"source {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )


def probe(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool]:
    width, height, orientation, alpha = _read_header(handle, reference)
    _check(reference, width, height, instructions, config)
    return (*_upright(width, height, orientation), alpha)


def decode(handle, found: str, reference: str, instructions, config):
    width, height, orientation, _ = _read_header(handle, reference)
    _check(reference, width, height, instructions, config)
    upright = _upright(width, height, orientation)
    config.check_plan(instructions.plan(*upright))
    try:
        image = _plugin().JXLImageFile(io.BytesIO(handle.read()))
        image.load()
        if image.jpeg:  # the original JPEG, given back as stored: turn it here
            turn = TRANSPOSE.get(orientation)
            if turn is not None:
                image = image.transpose(turn)
    except (FileProcError, MemoryError):
        raise  # the boundary names the memory limit
    except Exception as error:  # libjxl's errors come as its own exception types
        raise ProcessingError(
            f"source {reference!r} is {formats.a(found, 'image')} that could not be decoded ({reason(error)})"
        ) from None
    if image.size != upright:
        raise ProcessingError(
            f"source {reference!r} is {formats.a(found, 'image')} whose header says "
            f"{upright[0]}x{upright[1]} and whose pixels are {image.size[0]}x{image.size[1]}"
        )
    icc_profile = image.info.get("icc_profile") or None
    if image.mode == "F":  # floating point samples, 0 to 1
        image = image.point(lambda value: value * 255).convert("L")
    return (*normalise(image, icc_profile), upright)
