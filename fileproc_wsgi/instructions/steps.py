"""The steps: one entry per word, its :class:`~.arguments.Spec` and the builder that
makes its operation.

:data:`STEPS` maps each built-in step's word to what it takes and a builder, which reads
the split arguments with :mod:`.values` and returns the operation of
:mod:`fileproc_wsgi.operations`; an installed plugin's step is found on demand
(:func:`plugin_entry`) and builds through its own ``parse``. :func:`is_operation` says
whether a word is a step, :func:`unknown` what the error says when it is not.
"""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Callable

from .. import plugins
from ..formats import OUTPUT_FORMATS
from ..operations import (
    GRAVITY_NAMES,
    Background,
    Blur,
    Crop,
    Fill,
    Fit,
    Flip,
    Format,
    Frame,
    Grayscale,
    Operation,
    Pad,
    Page,
    PluginOperation,
    Quality,
    Resize,
    Rotate,
    Sharpen,
    Upscale,
)
from .arguments import Args, Arguments, Spec
from .lexer import fail
from .values import (
    CLOCK,
    MAX_PAGE,
    NUMBER,
    PERCENT,
    SECONDS,
    read_color,
    read_float,
    read_gravity,
    read_integer,
    read_ranged,
    read_size,
)


def _build_fit(step: str, args: Args) -> Operation:
    return Fit(*read_size(args.positional[0], step, both=False))


def _build_fill(step: str, args: Args) -> Operation:
    width, height = read_size(args.positional[0], step, both=True)
    gravity, focus = "center", None
    if "gravity" in args.keys and "focus" in args.keys:
        raise fail("give either gravity= or focus=, not both", args.keys["focus"], step, at_value=False)
    if "gravity" in args.keys:
        gravity = read_gravity(args.keys["gravity"], step, GRAVITY_NAMES)
    if "focus" in args.keys:
        token = args.keys["focus"]
        parts = token.text.split(",")
        if len(parts) != 2:
            raise fail(
                f"expected a focus like 0.5,0.3 (fractions of width and height), got {token.text!r}",
                token,
                step,
            )
        x, y = (read_ranged(token._replace(text=part), step, "focus", 0, 1) for part in parts)
        focus = (x, y)
    return Fill(width, height, gravity=gravity, focus=focus)


def _build_pad(step: str, args: Args) -> Operation:
    width, height = read_size(args.positional[0], step, both=True)
    color = read_color(args.keys["color"], step) if "color" in args.keys else None
    return Pad(width, height, color=color)


def _build_resize(step: str, args: Args) -> Operation:
    return Resize(*read_size(args.positional[0], step, both=True))


def _build_crop(step: str, args: Args) -> Operation:
    token = args.positional[0]
    parts = token.text.split(",")
    if len(parts) != 4:
        raise fail(
            f"expected a crop like X,Y,W,H in pixels or percent (10%,10%,80%,80%), got {token.text!r}",
            token,
            step,
        )
    percent = [part.endswith("%") for part in parts]
    if any(percent) and not all(percent):
        raise fail(
            f"expected all four of X,Y,W,H in pixels or all in percent, got {token.text!r}", token, step
        )
    if percent[0]:
        values = [
            read_ranged(token._replace(text=part[:-1]), step, "a crop percentage", 0, 100) for part in parts
        ]
    else:
        values = [read_float(token._replace(text=part), step, "a crop coordinate") for part in parts]
        if values[0] < 0 or values[1] < 0:
            raise fail(f"crop X and Y must not be negative, got {token.text!r}", token, step)
    if values[2] <= 0 or values[3] <= 0:
        raise fail(f"crop width and height must be greater than 0, got {token.text!r}", token, step)
    x, y, width, height = values
    return Crop(x, y, width, height, percent=percent[0])


def _build_rotate(step: str, args: Args) -> Operation:
    token = args.positional[0]
    if not NUMBER.fullmatch(token.text):
        raise fail(
            f"expected a number of degrees for rotate, like 90 or -12.5, got {token.text!r}", token, step
        )
    # Exact decimal arithmetic so that 360.1 is 0.1, not 0.10000000000002274; the
    # precision grows with the input so that huge angles stay exact too.
    context = decimal.Context(prec=max(28, len(token.text) + 2))
    angle = context.remainder(decimal.Decimal(token.text), decimal.Decimal(360))
    if angle < 0:
        angle = context.add(angle, decimal.Decimal(360))
    degrees = float(angle)
    color = read_color(args.keys["color"], step) if "color" in args.keys else None
    return Rotate(0.0 if degrees >= 360 else degrees + 0.0, color=color)


def _build_flip(step: str, args: Args) -> Operation:
    token = args.positional[0]
    direction = token.text.lower()
    if direction not in ("horizontal", "vertical"):
        raise fail(f"expected horizontal or vertical, got {token.text!r}", token, step)
    return Flip(direction)


def _build_blur(step: str, args: Args) -> Operation:
    return Blur(read_ranged(args.positional[0], step, "the blur radius", 0, 100, open_low=True))


def _build_sharpen(step: str, args: Args) -> Operation:
    if not args.positional:
        return Sharpen()
    return Sharpen(read_ranged(args.positional[0], step, "the sharpen amount", 0, 10, open_low=True))


def _build_background(step: str, args: Args) -> Operation:
    return Background(read_color(args.positional[0], step))


def _build_page(step: str, args: Args) -> Operation:
    return Page(read_integer(args.positional[0], step, "the page number", 1, MAX_PAGE))


def _build_frame(step: str, args: Args) -> Operation:
    token = args.positional[0]
    text = token.text
    if match := PERCENT.fullmatch(text):
        percent = read_ranged(token._replace(text=match.group(1)), step, "the frame percentage", 0, 100)
        return Frame(percent=percent)
    if SECONDS.fullmatch(text):
        return Frame(seconds=read_float(token._replace(text=text.rstrip("sS")), step, "the frame time"))
    if (match := CLOCK.fullmatch(text)) and len(text) <= 64:
        hours, minutes, seconds = match.groups()
        if decimal.Decimal(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
            raise fail(f"expected minutes and seconds below 60 in the frame time, got {text!r}", token, step)
        total = decimal.Decimal(seconds) + 60 * int(minutes) + 3600 * int(hours or 0)
        value = float(total)
        if not math.isfinite(value):
            raise fail(f"the frame time is out of range, got {text!r}", token, step)
        return Frame(seconds=value)
    raise fail(f"expected a frame time like 2.5, 2.5s, 00:01:02.5, 01:02 or 10%, got {text!r}", token, step)


def _build_format(step: str, args: Args) -> Operation:
    token = args.positional[0]
    name = token.text.lower()
    name = "jpeg" if name == "jpg" else name
    if name not in OUTPUT_FORMATS:
        raise fail(f"expected a format, one of {', '.join(OUTPUT_FORMATS)}, got {token.text!r}", token, step)
    quality = None
    if "quality" in args.keys:
        quality = read_integer(args.keys["quality"], step, "quality", 1, 100)
    allowed = {"lossless": ("webp", "avif"), "progressive": ("jpeg",)}
    for flag, flag_token in args.flags.items():
        if name not in allowed[flag]:
            raise fail(
                f"{flag!r} is only valid for {' or '.join(allowed[flag])}, not {name}", flag_token, step
            )
    return Format(name, quality, lossless="lossless" in args.flags, progressive="progressive" in args.flags)


def _build_quality(step: str, args: Args) -> Operation:
    return Quality(read_integer(args.positional[0], step, "quality", 1, 100))


@functools.lru_cache(maxsize=256)  # plugins are read once per process; so is each word's spec
def plugin_entry(word: str) -> tuple[Spec, Builder] | None:
    """The spec and builder of a plugin's step ``word``, or None: the first unknown word
    of a process reads the installed plugins (:mod:`fileproc_wsgi.plugins`)."""
    plugin = plugins.find_operation(word)
    if plugin is None:
        return None
    kind: type[PluginOperation] = plugin.target
    spec = Spec(kind.usage, kind.least, kind.most, keys=kind.keys, flags=kind.flags)

    def build(step: str, args: Args) -> Operation:
        made = kind.parse(Arguments(step, args))
        if not isinstance(made, kind):
            raise TypeError(f"{kind.__name__}.parse gave {type(made).__name__}, not a {kind.__name__}")
        return made

    return spec, build


def find_entry(word: str) -> tuple[Spec, Builder] | None:
    """The spec and builder of step ``word`` (lowercase), built-in or a plugin's, or None."""
    return STEPS.get(word) or plugin_entry(word)


def is_operation(word: str) -> bool:
    """Whether ``word`` (any case) is a step: a built-in one, or an installed plugin's."""
    word = word.lower()
    return word in OPERATION_WORDS or (word != "source" and plugin_entry(word) is not None)


def unknown(written: str) -> str:
    """What an unknown step's error says: the built-in words and the installed plugins'."""
    problem = f"unknown operation {written!r}; expected one of: {_KNOWN}"
    installed = sorted(plugins.operations())
    if installed:
        problem += f"; or of the installed plugins: {', '.join(installed)}"
    failed = plugins.find_problem(written.lower())
    if failed is not None:
        problem += f"; {failed}"
    return problem


Builder = Callable[[str, Args], Operation]
SOURCE_SPEC = Spec("source <ref>", 1, 1)
STEPS: dict[str, tuple[Spec, Builder]] = {
    "fit": (Spec("fit WxH, fit Wx or fit xH", 1, 1), _build_fit),
    "fill": (Spec("fill WxH [gravity=G] [focus=X,Y]", 1, 1, keys=("focus", "gravity")), _build_fill),
    "pad": (Spec("pad WxH [color=#rrggbb]", 1, 1, keys=("color",)), _build_pad),
    "resize": (Spec("resize WxH", 1, 1), _build_resize),
    "crop": (Spec("crop X,Y,W,H", 1, 1), _build_crop),
    "upscale": (Spec("upscale", 0, 0), lambda step, args: Upscale()),
    "rotate": (Spec("rotate DEG [color=#rrggbb]", 1, 1, keys=("color",)), _build_rotate),
    "flip": (Spec("flip horizontal or flip vertical", 1, 1), _build_flip),
    "grayscale": (Spec("grayscale", 0, 0), lambda step, args: Grayscale()),
    "blur": (Spec("blur RADIUS", 1, 1), _build_blur),
    "sharpen": (Spec("sharpen [AMOUNT]", 0, 1), _build_sharpen),
    "background": (Spec("background #rrggbb", 1, 1), _build_background),
    "page": (Spec("page N", 1, 1), _build_page),
    "frame": (Spec("frame T", 1, 1), _build_frame),
    "format": (
        Spec(
            "format NAME [quality=Q] [lossless] [progressive]",
            1,
            1,
            keys=("quality",),
            flags=("lossless", "progressive"),
        ),
        _build_format,
    ),
    "quality": (Spec("quality Q", 1, 1), _build_quality),
}

OPERATION_WORDS = frozenset(STEPS)
"""Every built-in step word except ``source`` (plugins add more: :func:`is_operation`)."""
BUILTIN_WORDS = OPERATION_WORDS | {"source"}
"""The words no plugin may take."""

_KNOWN = ", ".join(sorted(OPERATION_WORDS))
