"""Operations: small value objects that each do one thing to a Pillow image.

Every operation knows two things and nothing else (no files, URLs or databases):

- ``size(width, height)``: the output size for an input of that size, pure arithmetic,
  so a registrar can predict ``width``/``height`` for the ``<img>`` tag without decoding;
- ``apply(image)``: the same transformation on a decoded image.

Images reach ``apply`` already normalised by the engine to one of ``L``, ``LA``, ``RGB``
or ``RGBA`` and already turned upright by their EXIF orientation. The grammar (how a
step is written and its canonical text) lives in :mod:`fileproc_wsgi.instructions`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, TypedDict

from PIL import Image, ImageChops, ImageFilter

from .errors import ProcessingError

GRAVITIES = {
    "center": (0.5, 0.5),
    "north": (0.5, 0.0),
    "south": (0.5, 1.0),
    "east": (1.0, 0.5),
    "west": (0.0, 0.5),
    "northeast": (1.0, 0.0),
    "northwest": (0.0, 0.0),
    "southeast": (1.0, 1.0),
    "southwest": (0.0, 1.0),
}
SMART = "smart"
"""The gravity that crops to the most detailed, most colourful part (see :func:`attention_box`)."""
GRAVITY_NAMES = (*GRAVITIES, SMART)
WHITE = "#ffffff"


class _Resample(TypedDict):
    resample: Image.Resampling
    reducing_gap: float


# reducing_gap lets Pillow shrink by an integer factor (cheap box reduce) before the
# final Lanczos pass; 3.0 keeps the result indistinguishable from a full Lanczos.
_RESAMPLE: _Resample = {"resample": Image.Resampling.LANCZOS, "reducing_gap": 3.0}


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("LA", "RGBA")


def rgb(color: str) -> tuple[int, int, int]:
    """``'#rrggbb'`` (the canonical form the parser produces) as a tuple."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _fill_color(image: Image.Image, color: str | None) -> tuple[int, ...] | int:
    """The colour for new pixels: the given one, else transparent or white."""
    if color is None:
        return (0,) * len(image.getbands()) if has_alpha(image) else (255,) * len(image.getbands())
    red, green, blue = rgb(color)
    if image.mode in ("L", "LA"):
        grey = round(0.299 * red + 0.587 * green + 0.114 * blue)
        return (grey, 255) if image.mode == "LA" else grey
    return (red, green, blue, 255) if image.mode == "RGBA" else (red, green, blue)


class Operation:
    """Base of all operations: identity in both size and pixels."""

    word: ClassVar[str]
    # Steps that select what the engine decodes rather than change the decoded image.
    engine_step: ClassVar[bool] = False

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    def apply(self, image: Image.Image) -> Image.Image:
        return image


MODES = ("L", "LA", "RGB", "RGBA")
"""The modes an operation is given and must give back."""


class PluginOperation(Operation):
    """The base of an operation a plugin adds (see ``docs/plugins.md``).

    A subclass names its ``word`` (not a built-in step's), says how it is written
    (``usage``, at ``least`` and at ``most`` so many positional arguments, its ``keys``
    and its ``flags``) and implements:

    - ``parse(arguments)``, a classmethod: the operation the arguments describe, read
      through :class:`fileproc_wsgi.instructions.Arguments`, whose readers refuse a bad
      value with an :class:`~fileproc_wsgi.errors.InstructionError` naming the step,
      line and column, as for built-in steps;
    - ``canonical_arguments()``: its arguments in one fixed form, so that texts meaning
      the same give the same checksum: positional values and flags as strings,
      ``key=value`` pairs as ``(key, value)`` tuples, in a fixed order, defaults left out
      (the core adds the word and the quotes); parsing the result gives back an equal
      operation;
    - ``size(width, height)`` and ``apply(image)``, as every operation; ``apply`` is given
      an image in one of :data:`MODES` and must give one back (checked);
    - optionally ``salt()``: text for the checksum about what the arguments do not say
      (the bytes of a file the step reads), so that a change there gives new URLs;
    - optionally ``scaled(factor)``: the step for a result ``factor`` times as large
      (``densities=2`` asks for one), arguments in output pixels multiplied (a border's
      width). The default, the step unchanged, is right for arguments relative to the
      image (a logo a fifth of its width); a step that adds or removes a fixed number of
      pixels and keeps the default makes its ``2x`` variant smaller than twice the
      ``1x``, and a ``densities=`` block then drops that density.

    ``apply`` runs once per frame of an animation kept animated, so it must give the
    same result for the same image each time (no randomness, no clock). A result whose
    size is not what ``size`` said is resized to it, with a warning naming the step.

    The plugin's distribution name and version enter the checksum of every text using
    the step, so upgrading the plugin gives new URLs.
    """

    usage: ClassVar[str] = ""
    least: ClassVar[int] = 0
    most: ClassVar[int] = 0
    keys: ClassVar[tuple[str, ...]] = ()
    flags: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("apply")
        if own is not None and not getattr(own, "_checked", False):
            # Replacing the method is the point; mypy refuses `cls.apply = ...` outright.
            setattr(cls, "apply", _checked_apply(own))  # noqa: B010

    @classmethod
    def parse(cls, arguments) -> PluginOperation:
        raise NotImplementedError(f"{cls.__name__}.parse")

    def canonical_arguments(self) -> tuple[str | tuple[str, str], ...]:
        return ()

    def salt(self) -> str:
        return ""

    def scaled(self, factor: float) -> PluginOperation:
        """This step for a result ``factor`` times as large (1 < factor <= 4)."""
        return self


def _checked_apply(apply):
    """``apply`` refusing, by the step's word, a result that is no image in :data:`MODES`:
    the encoder and the next step count on it."""

    def checked(self: PluginOperation, image: Image.Image) -> Image.Image:
        result = apply(self, image)
        if not isinstance(result, Image.Image) or result.mode not in MODES:
            got = result.mode if isinstance(result, Image.Image) else type(result).__name__
            raise ProcessingError(
                f"the plugin step {self.word!r} gave {got!r}, not an image in mode {', '.join(MODES)}"
            )
        return result

    vars(checked)["_checked"] = True
    checked.__doc__ = apply.__doc__
    checked.__name__ = apply.__name__
    return checked


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclasses.dataclass(frozen=True)
class Fit(Operation):
    """Scale to fit inside the box keeping the aspect ratio (CSS ``contain``)."""

    word: ClassVar[str] = "fit"
    width: int | None
    height: int | None
    upscale: bool = False

    def size(self, width: int, height: int) -> tuple[int, int]:
        scales = []
        if self.width:
            scales.append(self.width / width)
        if self.height:
            scales.append(self.height / height)
        scale = min(scales)
        if scale >= 1 and not self.upscale:
            return width, height
        # The bounding side is exactly the box side, never off by a rounding error.
        if self.width and scale == self.width / width:
            return self.width, max(1, round(height * scale))
        assert self.height  # the width did not bound the box, so the height did
        return max(1, round(width * scale)), self.height

    def apply(self, image: Image.Image) -> Image.Image:
        size = self.size(*image.size)
        return image if size == image.size else image.resize(size, **_RESAMPLE)


@dataclasses.dataclass(frozen=True)
class Fill(Operation):
    """Cover the box and crop the overflow (CSS ``cover``), around a gravity or focus.

    Without ``upscale`` a source smaller than the box is not enlarged: the result is the
    largest crop of the box's aspect ratio that the source holds.
    """

    word: ClassVar[str] = "fill"
    width: int
    height: int
    gravity: str = "center"
    focus: tuple[float, float] | None = None
    upscale: bool = False

    def size(self, width: int, height: int) -> tuple[int, int]:
        shrink = 1.0 if self.upscale else min(1.0, width / self.width, height / self.height)
        if shrink == 1.0:
            return self.width, self.height
        return _scaled(self.width, self.height, shrink)

    def crop_box(
        self, width: int, height: int, image: Image.Image | None = None
    ) -> tuple[float, float, float, float]:
        """The region of the source that becomes the result; ``gravity=smart`` looks at
        ``image`` to choose it (without one, it is centred)."""
        out_w, out_h = self.size(width, height)
        if width * out_h > height * out_w:  # source is wider than the box: trim the sides
            crop_w, crop_h = height * out_w / out_h, float(height)
        else:
            crop_w, crop_h = float(width), width * out_h / out_w
        if self.focus is not None:
            left = min(max(self.focus[0] * width - crop_w / 2, 0), width - crop_w)
            top = min(max(self.focus[1] * height - crop_h / 2, 0), height - crop_h)
        elif self.gravity == SMART and image is not None:
            left, top = attention_box(image, crop_w, crop_h)
        else:
            anchor_x, anchor_y = GRAVITIES.get(self.gravity, GRAVITIES["center"])
            left, top = (width - crop_w) * anchor_x, (height - crop_h) * anchor_y
        return left, top, left + crop_w, top + crop_h

    def apply(self, image: Image.Image) -> Image.Image:
        size = self.size(*image.size)
        box = self.crop_box(*image.size, image=image)
        return image.resize(size, box=box, **_RESAMPLE)


# The side the attention map is measured at: enough to place a crop within a percent of
# the picture, small enough that it costs well under a millisecond.
_ATTENTION_SIDE = 256
# Windows scoring within this fraction of the best count as equally good, and the most
# central of them wins: a flat, smooth or evenly busy picture is cropped like
# gravity=center rather than by a difference at the level of noise.
_ATTENTION_TIE = 0.02


def attention_box(image: Image.Image, crop_w: float, crop_h: float) -> tuple[float, float]:
    """Where a ``crop_w`` x ``crop_h`` window on ``image`` holds the most detail and colour.

    The measure is edge energy (the luminance gradient) plus saturation, on a copy
    reduced to about 256 pixels a side, transparent parts counting for nothing; a fill
    crop spans the whole image in one direction, so the best window is found along the
    other direction from the column (or row) sums. Pillow does the pixel work; the same
    image always gives the same box. Returns the window's left and top edges.
    """
    width, height = image.size
    along_x = crop_w < width - 0.5
    along_y = crop_h < height - 0.5
    if not along_x and not along_y:
        return 0.0, 0.0
    # Every pixel of a large image is read once by the nearest-neighbour pick, then
    # halved by a box: far cheaper than a box over all of it, and as good for a measure.
    factor = math.ceil(max(width, height) / _ATTENTION_SIDE)
    small = image
    if factor > 1:
        size = (max(1, width * 2 // factor), max(1, height * 2 // factor))
        small = image.resize(size, Image.Resampling.NEAREST).reduce(2)
    if small.width < 4 or small.height < 4:
        return (width - crop_w) / 2, (height - crop_h) / 2
    grey = small.convert("L")
    # Differences with the next pixel across and down: a gradient magnitude, an order of
    # magnitude cheaper than a 3x3 kernel. The shifted copies wrap around, so the last
    # row and column, which compare opposite edges, are dropped with the border.
    energy = ImageChops.add(
        ImageChops.difference(grey, ImageChops.offset(grey, -1, 0)),
        ImageChops.difference(grey, ImageChops.offset(grey, 0, -1)),
    )
    inner = (1, 1, small.width - 1, small.height - 1)
    energy = energy.crop(inner)
    if small.mode in ("RGB", "RGBA"):
        saturation = small.convert("RGB").convert("HSV").getchannel("S").crop(inner)
        energy = ImageChops.add(energy, saturation, scale=2.0)
    if has_alpha(small):
        energy = ImageChops.multiply(energy, small.getchannel("A").crop(inner))
    energy = energy.convert("F")
    if along_x:
        profile = energy.resize((energy.width, 1), Image.Resampling.BOX)
        centre = _best_centre(profile, energy.width, crop_w / width)
        left = (width - crop_w) / 2 if centre is None else (1 + centre) / small.width * width - crop_w / 2
        return min(max(left, 0.0), width - crop_w), 0.0
    profile = energy.resize((1, energy.height), Image.Resampling.BOX).transpose(Image.Transpose.TRANSPOSE)
    centre = _best_centre(profile, energy.height, crop_h / height)
    top = (height - crop_h) / 2 if centre is None else (1 + centre) / small.height * height - crop_h / 2
    return 0.0, min(max(top, 0.0), height - crop_h)


def _best_centre(profile: Image.Image, length: int, fraction: float) -> float | None:
    """The centre of the window covering ``fraction`` of a one-row ``profile`` of
    ``length`` values that has the largest sum, in the profile's pixels; None when the
    middle window is as good as any (then the crop is exactly centred)."""
    pixels = profile.load()
    assert pixels is not None  # None only for an image without pixel data
    sums = [0.0]
    for index in range(length):
        # Mode F: each pixel is a float, which Pillow's annotation (any mode) cannot say.
        sums.append(sums[-1] + pixels[index, 0])  # type: ignore[operator]
    window = min(length, max(1, round(fraction * length)))
    scores = [sums[start + window] - sums[start] for start in range(length - window + 1)]
    good = max(scores) * (1 - _ATTENTION_TIE)
    middle = (length - window) / 2
    start = min((start for start, score in enumerate(scores) if score >= good), key=lambda s: abs(s - middle))
    return None if abs(start - middle) <= 0.5 else start + window / 2


@dataclasses.dataclass(frozen=True)
class Pad(Operation):
    """Fit inside the box, then pad to exactly the box with a colour.

    Without a colour the padding is transparent for images with alpha, else white.
    """

    word: ClassVar[str] = "pad"
    width: int
    height: int
    color: str | None = None
    upscale: bool = False

    def size(self, width: int, height: int) -> tuple[int, int]:
        return self.width, self.height

    def apply(self, image: Image.Image) -> Image.Image:
        image = Fit(self.width, self.height, self.upscale).apply(image)
        if image.size == (self.width, self.height):
            return image
        canvas = Image.new(image.mode, (self.width, self.height), _fill_color(image, self.color))
        canvas.paste(image, ((self.width - image.width) // 2, (self.height - image.height) // 2))
        return canvas


@dataclasses.dataclass(frozen=True)
class Resize(Operation):
    """Exactly the given size, aspect ratio ignored."""

    word: ClassVar[str] = "resize"
    width: int
    height: int

    def size(self, width: int, height: int) -> tuple[int, int]:
        return self.width, self.height

    def apply(self, image: Image.Image) -> Image.Image:
        return (
            image
            if image.size == (self.width, self.height)
            else image.resize((self.width, self.height), **_RESAMPLE)
        )


@dataclasses.dataclass(frozen=True)
class Crop(Operation):
    """A region in pixels, or in percent of the current size when ``percent``.

    A region reaching past the image is clipped to it; one wholly outside it fails.
    """

    word: ClassVar[str] = "crop"
    x: float
    y: float
    width: float
    height: float
    percent: bool = False

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        x, y, w, h = self.x, self.y, self.width, self.height
        if self.percent:
            x, w = x * width / 100, w * width / 100
            y, h = y * height / 100, h * height / 100
        left, top = round(x), round(y)
        right, bottom = min(round(x + w), width), min(round(y + h), height)
        if left >= width or top >= height or right <= left or bottom <= top:
            raise ProcessingError(f"crop {self.describe()} lies outside the {width}x{height} image")
        return left, top, right, bottom

    def describe(self) -> str:
        unit = "%" if self.percent else ""
        return ",".join(f"{value:g}{unit}" for value in (self.x, self.y, self.width, self.height))

    def size(self, width: int, height: int) -> tuple[int, int]:
        left, top, right, bottom = self.box(width, height)
        return right - left, bottom - top

    def apply(self, image: Image.Image) -> Image.Image:
        return image.crop(self.box(*image.size))


@dataclasses.dataclass(frozen=True)
class Upscale(Operation):
    """Allows every fit, fill and pad of the instructions to enlarge."""

    word: ClassVar[str] = "upscale"


@dataclasses.dataclass(frozen=True)
class Rotate(Operation):
    """Rotate clockwise by ``degrees``; new corners get ``color`` (see :class:`Pad`)."""

    word: ClassVar[str] = "rotate"
    degrees: float
    color: str | None = None

    _TRANSPOSE: ClassVar[dict[float, Image.Transpose]] = {
        90.0: Image.Transpose.ROTATE_270,  # Pillow's ROTATE_* turn counter-clockwise
        180.0: Image.Transpose.ROTATE_180,
        270.0: Image.Transpose.ROTATE_90,
    }

    def size(self, width: int, height: int) -> tuple[int, int]:
        angle = self.degrees % 360
        if angle in (0, 180):
            return width, height
        if angle in (90, 270):
            return height, width
        # Pillow's own rotate(expand=True) arithmetic, so the prediction matches exactly:
        # corners mapped by the inverse matrix about the centre, then floored and ceiled.
        radians = -math.radians(-angle % 360)
        a, b = round(math.cos(radians), 15), round(math.sin(radians), 15)
        d, e = round(-math.sin(radians), 15), round(math.cos(radians), 15)
        cx, cy = width / 2, height / 2
        c = a * -cx + b * -cy + cx
        f = d * -cx + e * -cy + cy
        corners = ((0, 0), (width, 0), (width, height), (0, height))
        xs = [a * x + b * y + c for x, y in corners]
        ys = [d * x + e * y + f for x, y in corners]
        return math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys))

    def apply(self, image: Image.Image) -> Image.Image:
        angle = self.degrees % 360
        if angle == 0:
            return image
        if angle in self._TRANSPOSE:
            return image.transpose(self._TRANSPOSE[angle])
        return image.rotate(
            -angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_fill_color(image, self.color)
        )


@dataclasses.dataclass(frozen=True)
class Flip(Operation):
    """Mirror ``horizontal`` (left-right) or ``vertical`` (top-bottom)."""

    word: ClassVar[str] = "flip"
    direction: str

    def apply(self, image: Image.Image) -> Image.Image:
        if self.direction == "horizontal":
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


@dataclasses.dataclass(frozen=True)
class Grayscale(Operation):
    """Luminance only; transparency is kept."""

    word: ClassVar[str] = "grayscale"

    def apply(self, image: Image.Image) -> Image.Image:
        return image.convert("LA" if has_alpha(image) else "L")


@dataclasses.dataclass(frozen=True)
class Blur(Operation):
    """Gaussian blur with the given radius in pixels."""

    word: ClassVar[str] = "blur"
    radius: float

    def apply(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(self.radius))


@dataclasses.dataclass(frozen=True)
class Sharpen(Operation):
    """Unsharp mask; ``amount`` 1 is a moderate sharpening, 2 twice as strong."""

    word: ClassVar[str] = "sharpen"
    amount: float = 1.0

    def apply(self, image: Image.Image) -> Image.Image:
        return image.filter(
            ImageFilter.UnsharpMask(radius=1.0, percent=round(self.amount * 100), threshold=2)
        )


@dataclasses.dataclass(frozen=True)
class Background(Operation):
    """Flatten transparency onto a colour; images without alpha are unchanged."""

    word: ClassVar[str] = "background"
    color: str

    def apply(self, image: Image.Image) -> Image.Image:
        return flatten(image, self.color)


def flatten(image: Image.Image, color: str = WHITE) -> Image.Image:
    """``image`` without alpha, its transparent parts showing ``color``."""
    if not has_alpha(image):
        return image
    opaque_mode = "L" if image.mode == "LA" else "RGB"
    canvas = Image.new(opaque_mode, image.size, _fill_color(image.convert(opaque_mode), color))
    canvas.paste(image.convert(opaque_mode), mask=image.getchannel("A"))
    return canvas


@dataclasses.dataclass(frozen=True)
class Page(Operation):
    """Which page of a document (1-based) the engine renders."""

    word: ClassVar[str] = "page"
    engine_step: ClassVar[bool] = True
    number: int


@dataclasses.dataclass(frozen=True)
class Frame(Operation):
    """Which video frame the engine decodes: at ``seconds``, or at ``percent`` of duration."""

    word: ClassVar[str] = "frame"
    engine_step: ClassVar[bool] = True
    seconds: float | None = None
    percent: float | None = None


@dataclasses.dataclass(frozen=True)
class Format(Operation):
    """The output format and its encoder options (used by the encoder, not ``apply``)."""

    word: ClassVar[str] = "format"
    name: str
    quality: int | None = None
    lossless: bool = False
    progressive: bool = False


@dataclasses.dataclass(frozen=True)
class Quality(Operation):
    """Shorthand for the quality of whatever format the result has."""

    word: ClassVar[str] = "quality"
    value: int


# Steps that resample the whole image to a size of their own.
RESAMPLING = (Fit, Fill, Pad, Resize)

BUILT_IN: tuple[type[Operation], ...] = (
    Fit, Fill, Pad, Resize, Crop, Upscale, Rotate, Flip, Grayscale, Blur, Sharpen,
    Background, Page, Frame, Format, Quality,
)  # fmt: skip
RESERVED_WORDS = frozenset(step.word for step in BUILT_IN) | {"source"}
"""The words of the built-in steps and ``source``, which no plugin may take (the grammar
in :mod:`fileproc_wsgi.instructions` has one entry for each; a test holds them equal)."""


def reduction_target(
    operations: tuple[Operation, ...], width: int, height: int, *, enlarge: bool = False
) -> tuple[int, int] | None:
    """The smallest size the source may be decoded at without losing output detail.

    Decoders that can shrink while decoding (JPEG's DCT scaling, PDF rendering) use
    this. Only steps that do not care about the scale (flips, right-angle turns, colour)
    may come before the first resampling step; anything else means full size (None).
    Never above ``width`` x ``height`` unless ``enlarge``: a source that can be drawn at
    any size (a PDF page, an SVG) then gets the larger size a step enlarges to (``upscale
    | fit 600x``, ``resize``), rather than pixels resampled up from its natural size.
    """
    for operation in operations:
        if isinstance(operation, RESAMPLING):
            out_w, out_h = operation.size(width, height)
            if isinstance(operation, Pad):
                out_w, out_h = Fit(operation.width, operation.height, operation.upscale).size(width, height)
            scale = max(out_w / width, out_h / height)
            if scale >= 1 and not enlarge:
                return width, height
            return math.ceil(width * scale), math.ceil(height * scale)
        if isinstance(operation, Rotate) and operation.degrees % 90 == 0:
            width, height = operation.size(width, height)
        elif not isinstance(operation, (Flip, Grayscale, Background, Upscale, Page, Frame, Format, Quality)):
            return None
    return None
