"""The size a vector source (a PDF page, an SVG drawing, an office document's page) is
drawn at: one rule for the engines that render rather than decode.

A raster source holds its pixels, and an engine decodes them at most at their own size;
a vector source has a *natural size* (points, CSS pixels) and can be drawn at any. It is
drawn at the size the operations need (:func:`~fileproc_wsgi.operations.reduction_target`),
never at its natural size and then resampled: smaller for ``fit 200x`` (a 10^6 x 10^6
``viewBox`` is a 200 x 200 render), and larger where the steps enlarge (``upscale | fit
600x`` of a 40 x 30 logo is drawn at 600 x 450, crisp, instead of enlarged by Lanczos).
The natural size remains the unit of ``crop`` coordinates and what the registrar predicts
from, so a step that needs the source's own coordinates first gets the natural size.
"""

from __future__ import annotations

from ..operations import reduction_target


def natural_size(width: float, height: float) -> tuple[int, int]:
    """A natural size in points or CSS pixels, as whole pixels (at least one a side)."""
    return max(1, round(width)), max(1, round(height))


def render_size(instructions, natural: tuple[int, int], subject: str, config) -> tuple[int, int]:
    """The pixel size to draw a source of ``natural`` size at for ``instructions``,
    refused over ``max_source_pixels`` (``subject`` names the source in the message).

    Always a size from which the steps give exactly the promised result. An enlarged
    render over ``max_source_pixels`` (a ``fill`` that covers its box with a very long
    drawing) falls back to the natural size, enlarged by the steps as any source is.
    """
    width, height = natural
    size = _fitting(instructions, width, height)
    if size != natural and size[0] * size[1] > config.max_source_pixels > width * height:
        size = natural
    config.check_source_pixels(subject, *size, rendered=True)
    return size


def _fitting(instructions, width: int, height: int) -> tuple[int, int]:
    target = reduction_target(instructions.operations, width, height, enlarge=True)
    wanted = instructions.predict_size(width, height)
    if target is None or wanted is None or target == (width, height):
        return width, height
    # reduction_target rounds up, and a render one pixel off can change how a later step
    # rounds (a fit landing exactly on its box keeps the other side as it is): take the
    # first long side near the target, the target's own first, that gives exactly the
    # predicted result. The one below wins only where the natural-size pipeline would
    # itself have rounded down to it.
    longest, needed = max(width, height), max(target)
    for side in (needed, needed - 1, needed + 1, needed + 2):
        if side < 1:
            continue
        scale = side / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if instructions.predict_size(*size) == wanted:
            return size
    return width, height
