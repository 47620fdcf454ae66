"""The HEIF engine: phone photos (HEIC, and the rest of the HEIF family) through
pillow-heif, which bundles libheif and its HEVC decoder.

Chosen by measurement over ImageMagick's HEIC coder, which this project used before
(``bench/heif.py``): on the same files libheif through pillow-heif decodes 1.5 to 4 times
faster, keeps the alpha plane and the ICC profile (Debian's ImageMagick 6 with libheif 1.15
drops both), applies the container's transforms to every layout (a camera's rotated grid
came out unturned through ImageMagick), and reads the primary image of a file whose other
images are truncated. It read every file of pillow-heif's own test corpus that ImageMagick
read, so ImageMagick is no fallback for HEIF; it keeps PSD and odd TIFFs.

**Headers only at registration, without libheif.** The web process reads the ISO BMFF boxes
itself (:class:`_Boxes`: ``meta`` and what it holds, a few kilobytes; a ``meta`` over
:data:`_META_BYTES` is refused): the primary item (``pitm``), the items (``iinf``), their
references (``iref``: ``thmb`` thumbnails and ``auxl`` auxiliary images, an alpha plane when
its ``auxC`` names one) and properties (``ipco``/``ipma``: ``ispe``, ``irot``, ``clap``).
The size is the upright one, as libheif gives it: the ``ispe`` of the item (a grid's is the
output's), its clean aperture rounded as libheif rounds it, sides swapped by a quarter
``irot``, in the order the item lists them; pillow-heif resets the EXIF orientation that
phones write as well to 1, so no picture turns twice. Where the boxes leave anything open
(an item type not known here, an image without ``ispe``, items listed out of order), the
header is left to libheif, in a worker (:func:`probe_native`): never a guess. libheif is
imported only there and in :func:`decode`.

**Scaled decode.** libheif decodes at full size only, but cameras and some phones embed
smaller copies (Canon writes 1616 px, iPhones 320 px): when the operations shrink the
picture, the smallest embedded copy that is still large enough, and is a true scaled copy
(same transforms, crop and colour profile), is decoded instead, through pillow-heif's
``draft``. A 400 px thumbnail of a camera's 33 MP HEIF then costs milliseconds, not seconds.

**Pages.** ``page 1`` (the default) is the primary image, the one every viewer shows;
``page 2`` onward are the file's other top-level images (a burst, the second view of a
stereo pair) in file order. Thumbnails, depth maps, gain maps and alpha planes are not
pages.

**Colour.** The ICC profile travels with the image, as for every engine. 10- and 12-bit
images are scaled to 8 bits; an ``nclx`` description without an ICC profile (wide-gamut or
HDR transfer curves) is not converted: such pixels are shown as if sRGB.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import Any

from PIL import Image

from .. import formats
from ..errors import ProcessingError
from ..operations import reduction_target
from .boundary import failure
from .native import NativeLibrary
from .raster import normalise

FORMATS = frozenset({"HEIF"})
# A phone's meta box is a few kilobytes, a 200 MP grid's some tens: more is no photo.
_META_BYTES = 4 << 20
_TOP_LEVEL_BOXES = 64  # boxes walked looking for meta (ftyp, free, mdat ... come first)
# Item types libheif decodes as pictures, and those it carries as metadata; any other type
# leaves the reading to libheif.
_IMAGE_TYPES = frozenset({b"hvc1", b"grid", b"iden", b"iovl", b"av01", b"jpeg"})
_OTHER_TYPES = frozenset({b"Exif", b"mime", b"uri "})
_ALPHA = frozenset({b"urn:mpeg:hevc:2015:auxid:1", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha"})


_PILLOW_HEIF = NativeLibrary("pillow_heif")


def available() -> dict[str, bool]:
    return {"heif": _PILLOW_HEIF.installed()}  # found without importing: the web process never loads libheif


def load() -> None:
    _PILLOW_HEIF.load()


def _pillow_heif() -> Any:
    return _PILLOW_HEIF.get()


# --------------------------------------------------------------------------- the boxes


class _Undecided(Exception):
    """The boxes leave open what libheif would make of them."""


@dataclasses.dataclass
class _Item:
    type: bytes
    hidden: bool
    properties: list[int] = dataclasses.field(default_factory=list)  # ipco indexes, 1-based


@dataclasses.dataclass
class _Header:
    primary: int
    items: dict[int, _Item]  # in item ID order, as libheif lists them
    properties: list[tuple[bytes, bytes]]  # ipco's (type, body)
    references: list[tuple[bytes, int, list[int]]]  # (type, from, to)

    def pages(self) -> list[int]:
        """Top-level images, the primary first, then the others in libheif's order."""
        # The tiles and layers of a derived image are pages too when not hidden (libheif
        # lists an overlay's visible layers after it); thumbnails and auxiliary images never.
        secondary = {source for kind, source, _ in self.references if kind in (b"thmb", b"auxl")}
        found = []
        for item_id, item in self.items.items():
            if item.hidden or item_id in secondary or item.type in _OTHER_TYPES:
                continue
            if item.type not in _IMAGE_TYPES:
                raise _Undecided(f"item type {item.type!r}")
            found.append(item_id)
        if self.primary not in found:
            raise _Undecided("the primary item is not a top-level image")
        return [self.primary] + [item for item in found if item != self.primary]

    def size(self, item_id: int) -> tuple[int, int]:
        listed = [self.properties[index - 1] for index in self.items[item_id].properties]
        sizes = [body for kind, body in listed if kind == b"ispe"]
        if len(sizes) != 1 or len(sizes[0]) < 12:
            raise _Undecided("ispe")
        # ispe is the coded size wherever it is listed; the transforms apply in their order.
        size = struct.unpack(">II", sizes[0][4:12])
        for kind, body in listed:
            if kind == b"clap":
                size = _clean_aperture(body, size)
            elif kind == b"irot":
                if not body:
                    raise _Undecided("irot")
                if body[0] & 1:
                    size = size[::-1]
        return size

    def has_alpha(self, item_id: int) -> bool:
        if self.items[item_id].type == b"iden":
            raise _Undecided("alpha of a derived image")
        for kind, source, targets in self.references:
            if kind == b"auxl" and item_id in targets and source in self.items:
                for index in self.items[source].properties:
                    name, body = self.properties[index - 1]
                    if name == b"auxC" and body[4:].split(b"\0", 1)[0] in _ALPHA:
                        return True
        return False


def _clean_aperture(body: bytes, size: tuple[int, int]) -> tuple[int, int]:
    """The size of an image of ``size`` cropped by ``clap``. An aperture of whole pixels
    inside the picture is certain; libheif's rounding of a fractional one, or its clamping
    of one larger than the picture, is left to libheif."""
    if len(body) < 16:
        raise _Undecided("clap")
    width_n, width_d, height_n, height_d = struct.unpack(">IIII", body[:16])
    if not (width_d and height_d) or width_n % width_d or height_n % height_d:
        raise _Undecided("a clean aperture of fractional pixels")
    width, height = width_n // width_d, height_n // height_d
    if not (0 < width <= size[0] and 0 < height <= size[1]):
        raise _Undecided("a clean aperture outside the picture")
    return width, height


def _children(data: bytes, start: int = 0, end: int | None = None):
    """``(type, body)`` of each box in ``data[start:end]``."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        head = 8
        if size == 1:
            if start + 16 > end:
                raise ValueError("box cut short")
            size, head = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < head or start + size > end:
            raise ValueError(f"{kind.decode('latin-1')!r} box runs past its container")
        yield kind, data[start + head : start + size]
        start += size


def _meta(handle) -> bytes:
    """The body of the file's top-level ``meta`` box."""
    handle.seek(0)
    for _ in range(_TOP_LEVEL_BOXES):
        head = handle.read(16)
        if len(head) < 8:
            break
        size, kind = struct.unpack(">I4s", head[:8])
        length = 8
        if size == 1:
            if len(head) < 16:
                break
            size, length = struct.unpack(">Q", head[8:16])[0], 16
        if kind == b"meta":
            if size == 0 or size > _META_BYTES:
                raise ProcessingError(
                    f"its meta box is larger than the {_META_BYTES >> 20} MiB this server reads"
                )
            handle.seek(handle.tell() - len(head) + length)
            body = handle.read(size - length)
            if len(body) < size - length:
                raise ValueError("meta box cut short")
            return body
        if size == 0 or size < length:
            break
        handle.seek(handle.tell() - len(head) + size)
    raise ValueError("no meta box")


def _full(body: bytes) -> tuple[int, int, bytes]:
    if len(body) < 4:
        raise ValueError("full box cut short")
    return body[0], int.from_bytes(body[1:4], "big"), body[4:]


def _read_header(handle) -> _Header:
    meta = _meta(handle)
    _, _, meta = _full(meta)
    primary = None
    items: dict[int, _Item] = {}
    order: list[int] = []
    properties: list[tuple[bytes, bytes]] = []
    associations: dict[int, list[int]] = {}
    references: list[tuple[bytes, int, list[int]]] = []
    for kind, body in _children(meta):
        if kind == b"pitm":
            version, _, rest = _full(body)
            primary = struct.unpack(">H" if version == 0 else ">I", rest[: 2 if version == 0 else 4])[0]
        elif kind == b"iinf":
            version, _, rest = _full(body)
            skip = 2 if version == 0 else 4
            for entry, content in _children(rest, skip):
                if entry != b"infe":
                    continue
                version, flags, rest_ = _full(content)
                if version not in (2, 3):
                    raise _Undecided(f"infe version {version}")
                width = 2 if version == 2 else 4
                item_id = int.from_bytes(rest_[:width], "big")
                item_type = rest_[width + 2 : width + 6]
                if len(item_type) < 4 or item_id in items:
                    raise ValueError("infe")
                items[item_id] = _Item(item_type, bool(flags & 1))
                order.append(item_id)
        elif kind == b"iref":
            version, _, rest = _full(body)
            width = 2 if version == 0 else 4
            for reference, content in _children(rest):
                source = int.from_bytes(content[:width], "big")
                count = int.from_bytes(content[width : width + 2], "big")
                targets = content[width + 2 : width + 2 + count * width]
                if len(targets) < count * width:
                    raise ValueError("iref cut short")
                references.append(
                    (
                        reference,
                        source,
                        [
                            int.from_bytes(targets[i : i + width], "big")
                            for i in range(0, len(targets), width)
                        ],
                    )
                )
        elif kind == b"iprp":
            for part, content in _children(body):
                if part == b"ipco":
                    properties.extend(_children(content))
                elif part == b"ipma":
                    _read_associations(content, associations)
    if primary is None or not items:
        raise ValueError("no primary item")
    if order != sorted(order):
        raise _Undecided("items listed out of order")
    for item_id, indexes in associations.items():
        if item_id in items:
            if any(index < 1 or index > len(properties) for index in indexes):
                raise ValueError("property index out of range")
            items[item_id].properties = indexes
    return _Header(primary, dict(sorted(items.items())), properties, references)


def _read_associations(body: bytes, associations: dict[int, list[int]]) -> None:
    version, flags, rest = _full(body)
    count = int.from_bytes(rest[:4], "big")
    position = 4
    width = 2 if version < 1 else 4
    wide = flags & 1
    for _ in range(count):
        item_id = int.from_bytes(rest[position : position + width], "big")
        links = rest[position + width] if position + width < len(rest) else 0
        position += width + 1
        indexes = []
        for _ in range(links):
            if wide:
                value = int.from_bytes(rest[position : position + 2], "big") & 0x7FFF
                position += 2
            else:
                value = rest[position] & 0x7F if position < len(rest) else 0
                position += 1
            if value:  # 0: no property
                indexes.append(value)
        if position > len(rest):
            raise ValueError("ipma cut short")
        if item_id in associations:
            raise _Undecided("an item in two ipma boxes")
        associations[item_id] = indexes


# --------------------------------------------------------------------------- the engine


def _page(instructions, config) -> int:
    page = instructions.page if instructions is not None else None
    if config is not None:
        config.check_page(page)
    return page or 1


def _check_size(reference: str, page: int, width: int, height: int, config) -> None:
    if config is not None:
        subject = f"page {page} of {reference!r}" if page > 1 else f"source {reference!r}"
        config.check_source_pixels(subject, width, height)


def _no_such_page(reference: str, page: int, count: int) -> ProcessingError:
    return ProcessingError(f"page {page}: {reference!r} has only {count} top-level image(s)")


def probe(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool] | None:
    """The size and alpha of ``page N`` from the boxes; None where only libheif can say."""
    page = _page(instructions, config)
    try:
        header = _read_header(handle)
        pages = header.pages()
        if page > len(pages):
            raise _no_such_page(reference, page, len(pages))
        item = pages[page - 1]
        width, height = header.size(item)
        alpha = header.has_alpha(item)
    except (_Undecided, ValueError, IndexError, struct.error):
        return None  # libheif, in a worker, says what it makes of it (or refuses it)
    _check_size(reference, page, width, height, config)
    return width, height, alpha


def probe_native(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool]:
    with _open(handle, found, reference) as image:
        _select(image, reference, instructions, config)
        width, height = image.size
        return width, height, image.mode in ("RGBA", "RGBa", "LA", "La")


def _open(handle, found: str, reference: str) -> Image.Image:
    pillow_heif = _pillow_heif()
    data = handle.read()
    with failure(f"source {reference!r} is not a readable HEIF image"):
        # Not through Image.open: registering pillow-heif's opener would change what
        # Image.open does for the whole host process.
        return pillow_heif.HeifImageFile(io.BytesIO(data))


def _select(image: Image.Image, reference: str, instructions, config) -> None:
    """Move ``image`` to the image ``page N`` names, checking it against the limits."""
    page = _page(instructions, config)
    count = getattr(image, "n_frames", 1)
    if page > 1:
        if page > count:
            raise _no_such_page(reference, page, count)
        primary = image.tell()
        others = [index for index in range(count) if index != primary]
        image.seek(others[page - 2])
    _check_size(reference, page, *image.size, config)


def decode(handle, found: str, reference: str, instructions, config):
    image = _open(handle, found, reference)
    try:
        with failure(f"source {reference!r} is {formats.a(found, 'image')} that could not be decoded"):
            _select(image, reference, instructions, config)
            upright = image.size
            config.check_plan(instructions.plan(*upright))
            target = reduction_target(instructions.operations, *upright)
            if target and target[0] < upright[0]:
                if (target[0] > target[1]) != (upright[0] > upright[1]):
                    target = target[::-1]  # a quarter turn among the steps: the stored picture's sides
                image.draft(None, target)
            image.load()
    except BaseException:
        image.close()
        raise
    # Loaded, the image no longer needs the file (pillow-heif let go of it); closing it
    # would free the pixels too.
    icc_profile = image.info.get("icc_profile") or None
    if image.mode == "RGBa":  # premultiplied alpha, which no operation expects
        image = image.convert("RGBA")
    return (*normalise(image, icc_profile), upright)
