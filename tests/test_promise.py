"""The size printed in the ``<img>`` tag at registration is the size of the picture made.

A property test: every kind of source the suite makes (the pipeline's images, the PDF
document, video clips in each container, PSD/HEIC/float TIFF, odd-sized and rotated
files) under random chains of operations. Whenever registration gives a size, the result
the ``301`` leads to, decoded with Pillow, has exactly that size; a refusal must read as a
sentence and, at request time, be a permanent ``422`` (see ``support.first_request``).
"""

from __future__ import annotations

import io
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from support import Site, first_request, halves
from test_heif import heic
from test_magick import float_tiff, psd
from test_pdf import DOCUMENT, pdf_bytes
from test_pipeline import _sources
from test_video import write_clip

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

# name -> the kind of position step it takes ("page" with its count, "frame", or None)
SOURCES: dict[str, tuple[str | None, int]] = {}


def _write_sources(media) -> None:
    _sources(media)  # photo.jpg/.png, phone.jpg, logo.png, palette.png, grey16.png, cmyk.jpg, ...
    pages = {"animated.gif": 2, "scan.tiff": 2}
    for path in sorted(media.iterdir()):
        SOURCES[path.name] = ("page", pages[path.name]) if path.name in pages else (None, 1)

    def add(name: str, data: bytes, position=(None, 1)) -> None:
        (media / name).write_bytes(data)
        SOURCES[name] = position

    add("doc.pdf", pdf_bytes(DOCUMENT), ("page", len(DOCUMENT)))
    add("art.psd", psd(halves(301, 199)))
    add("photo.heic", heic(halves(161, 91)))
    add("float.tiff", float_tiff(halves(120, 80), halves(60, 90)), ("page", 2))
    add("turned.tiff", float_tiff(halves(120, 80), orientation="right_top"))
    for orientation in (2, 5, 6, 7, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        for kind, size in (
            ("JPEG", (1601, 1201)),
            ("TIFF", (31, 203)),
            ("PNG", (203, 31)),
            ("WEBP", (161, 91)),
        ):
            buffer = io.BytesIO()
            halves(*size).save(buffer, kind, exif=exif)
            add(f"orientation{orientation}.{kind.lower()}", buffer.getvalue())
    buffer = io.BytesIO()
    halves(301, 199).save(buffer, "TIFF", big_tiff=True)
    add("big.tiff", buffer.getvalue())
    buffer = io.BytesIO()
    halves(97, 61).save(buffer, "AVIF")
    add("odd.avif", buffer.getvalue())
    for name, container, codec, extra in (
        ("clip.mp4", "mp4", "libx264", {}),
        ("clip.mkv", "matroska", "libx264", {}),
        ("clip.webm", "webm", "libvpx-vp9", {}),
        ("clip.avi", "avi", "mpeg4", {}),
        ("turned.mp4", "mp4", "libx264", {"rotation": 90}),
        ("wide.mp4", "mp4", "libx264", {"sar": Fraction(4, 3)}),
        ("narrow.mkv", "matroska", "libx264", {"sar": Fraction(8, 9)}),
        ("odd.avi", "avi", "mpeg4", {"size": (161, 91), "sar": Fraction(3, 2)}),
    ):
        write_clip(media / name, container, codec, frames=10, **extra)
        SOURCES[name] = ("frame", 1)


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory):
    """One site for every example: Hypothesis runs many examples in one test call."""
    site = Site(tmp_path_factory.mktemp("promise"))
    _write_sources(site.media)
    yield site
    site.close()


SIZE = st.tuples(st.integers(1, 500), st.integers(1, 500))
STEPS = st.one_of(
    SIZE.map(lambda s: f"fit {s[0]}x{s[1]}"),
    st.integers(1, 500).map(lambda w: f"fit {w}x"),
    st.integers(1, 500).map(lambda h: f"fit x{h}"),
    SIZE.map(lambda s: f"fill {s[0]}x{s[1]}"),
    SIZE.map(lambda s: f"pad {s[0]}x{s[1]}"),
    SIZE.map(lambda s: f"resize {s[0]}x{s[1]}"),
    st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(1, 300), st.integers(1, 300)).map(
        lambda c: f"crop {c[0]},{c[1]},{c[2]},{c[3]}"
    ),
    st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(1, 100), st.integers(1, 100)).map(
        lambda c: f"crop {c[0]}%,{c[1]}%,{c[2]}%,{c[3]}%"
    ),
    st.integers(0, 359).map(lambda d: f"rotate {d}"),
    st.sampled_from([90, 180, 270]).map(lambda d: f"rotate {d}"),
    st.just("upscale"),
    st.sampled_from(["flip horizontal", "flip vertical", "grayscale", "blur 1", "sharpen"]),
    st.sampled_from(["jpeg", "png", "webp", "gif"]).map(lambda f: f"format {f}"),
)


@st.composite
def texts(draw) -> str:
    name = draw(st.sampled_from(sorted(SOURCES)))
    steps = [name]
    kind, count = SOURCES[name]
    if kind == "page" and draw(st.booleans()):
        steps.append(f"page {draw(st.integers(1, count))}")
    elif kind == "frame" and draw(st.booleans()):
        steps.append(f"frame {draw(st.sampled_from(['0', '0.3', '50%']))}")
    steps += draw(st.lists(STEPS, max_size=3))
    return " | ".join(steps)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples every run, so a failure here is reproducible in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_the_size_promised_is_the_size_made(shared_site, data):
    text = data.draw(texts(), label="instructions")
    outcome = first_request(shared_site, text)
    assert not outcome.problems, outcome.describe()


def test_every_source_is_made_at_its_promised_size(shared_site):
    # Each source once as it is and once shrunk, so no kind depends on Hypothesis' draws.
    broken = []
    for name in sorted(SOURCES):
        for steps in ("", " | fit 97x61"):
            outcome = first_request(shared_site, name + steps)
            if outcome.problems or outcome.kind != "made":
                broken.append(outcome.describe())
    assert not broken, "\n".join(broken)
