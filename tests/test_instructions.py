"""Tests for fileproc_wsgi.instructions: grammar, canonical form, checksum, predicted size."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import timeit
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fileproc_wsgi.errors import InstructionError
from fileproc_wsgi.instructions import (
    CHECKSUM_LENGTH,
    OPERATION_WORDS,
    PROCESSING_VERSION,
    Instructions,
    canonical_source,
    checksum,
    has_empty_source,
    is_checksum,
    leading_word,
    parse,
    source_step,
)
from fileproc_wsgi.operations import (
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
    Pad,
    Page,
    PluginOperation,
    Quality,
    Resize,
    Rotate,
    Sharpen,
    Upscale,
)

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        pytest.param("fit 400x300", Fit(400, 300), id="fit-box"),
        pytest.param("fit 400x", Fit(400, None), id="fit-width"),
        pytest.param("fit x300", Fit(None, 300), id="fit-height"),
        pytest.param("FIT 0400X0300", Fit(400, 300), id="fit-upper-leading-zeros"),
        pytest.param("fit 16384x1", Fit(16384, 1), id="fit-limits"),
        pytest.param("fill 400x300", Fill(400, 300), id="fill"),
        pytest.param(
            "fill 400x300 gravity=NorthEast", Fill(400, 300, gravity="northeast"), id="fill-gravity"
        ),
        pytest.param("fill 400x300 focus=0.25,1", Fill(400, 300, focus=(0.25, 1.0)), id="fill-focus"),
        pytest.param("pad 400x300", Pad(400, 300), id="pad"),
        pytest.param("pad 400x300 color=#ABC", Pad(400, 300, color="#aabbcc"), id="pad-short-colour"),
        pytest.param("pad 400x300 Color='#102030'", Pad(400, 300, color="#102030"), id="pad-quoted-colour"),
        pytest.param("resize 10x20", Resize(10, 20), id="resize"),
        pytest.param("crop 10,20,300,400", Crop(10, 20, 300, 400), id="crop-pixels"),
        pytest.param("crop 10%,10%,80%,80%", Crop(10, 10, 80, 80, percent=True), id="crop-percent"),
        pytest.param("crop 0.5,0,1.5,2", Crop(0.5, 0, 1.5, 2), id="crop-fractional-pixels"),
        pytest.param("upscale", Upscale(), id="upscale"),
        pytest.param("rotate 90", Rotate(90), id="rotate"),
        pytest.param("rotate -90", Rotate(270), id="rotate-negative"),
        pytest.param("rotate 720.5", Rotate(0.5), id="rotate-over-360"),
        pytest.param("rotate 360.1", Rotate(0.1), id="rotate-exact-decimal"),
        pytest.param("rotate -0", Rotate(0), id="rotate-minus-zero"),
        pytest.param("rotate 12.5 color=#fff", Rotate(12.5, color="#ffffff"), id="rotate-colour"),
        pytest.param("flip Horizontal", Flip("horizontal"), id="flip-horizontal"),
        pytest.param("flip vertical", Flip("vertical"), id="flip-vertical"),
        pytest.param("grayscale", Grayscale(), id="grayscale"),
        pytest.param("blur 2.5", Blur(2.5), id="blur"),
        pytest.param("blur 100", Blur(100), id="blur-max"),
        pytest.param("sharpen", Sharpen(), id="sharpen-default"),
        pytest.param("sharpen 2", Sharpen(2), id="sharpen-amount"),
        pytest.param("background #FF0000", Background("#ff0000"), id="background"),
        pytest.param("page 3", Page(3), id="page"),
        pytest.param("frame 2.5", Frame(seconds=2.5), id="frame-seconds"),
        pytest.param("frame 2.5s", Frame(seconds=2.5), id="frame-seconds-suffix"),
        pytest.param("frame 01:02:03.5", Frame(seconds=3723.5), id="frame-hh-mm-ss"),
        pytest.param("frame 01:02", Frame(seconds=62), id="frame-mm-ss"),
        pytest.param("frame 10%", Frame(percent=10), id="frame-percent"),
        pytest.param("format jpeg", Format("jpeg"), id="format-jpeg"),
        pytest.param(
            "format JPG quality=80 progressive", Format("jpeg", 80, progressive=True), id="format-jpg"
        ),
        pytest.param("format webp lossless", Format("webp", lossless=True), id="format-webp-lossless"),
        pytest.param("format avif lossless quality=50", Format("avif", 50, lossless=True), id="format-avif"),
        pytest.param("format png", Format("png"), id="format-png"),
        pytest.param("format gif", Format("gif"), id="format-gif"),
        pytest.param("quality 75", Quality(75), id="quality"),
    ],
)
def test_each_operation_parses_to_its_object(step, expected):
    assert parse(f"a.jpg\n{step}").steps == (expected,)


@pytest.mark.parametrize(
    ("text", "source"),
    [
        pytest.param("photos/a.jpg", "photos/a.jpg", id="bare"),
        pytest.param("source photos/a.jpg", "photos/a.jpg", id="source-word"),
        pytest.param("SOURCE photos/a.jpg", "photos/a.jpg", id="source-word-upper"),
        pytest.param("  photos//a.jpg  ", "photos/a.jpg", id="collapse-slashes"),
        pytest.param("./././photos/a.jpg", "photos/a.jpg", id="leading-dot-slash"),
        pytest.param("media:.//photos///a.jpg", "media:photos/a.jpg", id="root-prefix"),
        pytest.param("https://cdn.example.com//a.jpg", "https://cdn.example.com//a.jpg", id="url-untouched"),
        pytest.param("s3://bucket//key", "s3://bucket//key", id="s3-untouched"),
        pytest.param('"my photo.jpg" | fit 10x', "my photo.jpg", id="quoted"),
        pytest.param('source "say \\"hi\\".jpg"', 'say "hi".jpg', id="escaped-quotes"),
        pytest.param("source 'a\\\\b.jpg'", "a\\b.jpg", id="escaped-backslash"),
        pytest.param('"fit"', "fit", id="quoted-operation-word-is-a-source"),
        pytest.param('"a|b.jpg"|fit 10x', "a|b.jpg", id="pipe-inside-quotes"),
        pytest.param("https://x.example/a.jpg?w=1", "https://x.example/a.jpg?w=1", id="query-string"),
        pytest.param("# a comment\n\n  source a.jpg", "a.jpg", id="after-comments"),
        pytest.param("photos/my cat.jpg | fit 100x100", "photos/my cat.jpg", id="spaces-unquoted"),
        pytest.param("  source  my   cat.jpg  \nfit 10x", "my   cat.jpg", id="spaces-kept-as-written"),
        pytest.param("media:summer 2024/day 1.jpg", "media:summer 2024/day 1.jpg", id="spaces-after-root"),
        pytest.param("Bob's photo.jpg | fit 10x", "Bob's photo.jpg", id="lone-apostrophe"),
        pytest.param('source 12" record.jpg|fit 10x', '12" record.jpg', id="lone-double-quote"),
        pytest.param('my "a|b" cat.jpg | fit 10x', "my a|b cat.jpg", id="quoted-piece-among-words"),
        pytest.param("a=b c=d.jpg | fit 10x", "a=b c=d.jpg", id="equals-signs"),
        pytest.param("summer rotate 90.jpg", "summer rotate 90.jpg", id="operation-word-inside-a-name"),
        pytest.param("my fit photo.jpg", "my fit photo.jpg", id="operation-word-without-its-argument"),
    ],
)
def test_source_reference(text, source):
    assert parse(text).source == source


def test_steps_are_kept_as_written_and_upscale_applies_to_every_box():
    instructions = parse("a.jpg | fit 10x | upscale | fill 5x5 | pad 4x4 | resize 3x3")
    assert instructions.steps == (Fit(10, None), Upscale(), Fill(5, 5), Pad(4, 4), Resize(3, 3))
    assert instructions.operations == (
        Fit(10, None, upscale=True),
        Upscale(),
        Fill(5, 5, upscale=True),
        Pad(4, 4, upscale=True),
        Resize(3, 3),
    )


def test_without_upscale_operations_are_the_steps():
    instructions = parse("a.jpg | fit 10x")
    assert instructions.operations == instructions.steps


def test_operation_words():
    assert "source" not in OPERATION_WORDS
    assert OPERATION_WORDS == {
        "fit", "fill", "pad", "resize", "crop", "upscale", "rotate", "flip", "grayscale",
        "blur", "sharpen", "background", "page", "frame", "format", "quality",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a.jpg", None, id="none"),
        pytest.param("a.jpg | format webp", Format("webp"), id="format"),
        pytest.param(
            "a.jpg | format webp quality=70 | quality 50", Format("webp", 50), id="later-quality-wins"
        ),
        pytest.param("a.jpg | quality 50 | format webp", Format("webp", 50), id="earlier-quality-kept"),
        pytest.param(
            "a.jpg | quality 50 | format webp quality=60", Format("webp", 60), id="format-quality-later"
        ),
        pytest.param("a.jpg | format webp lossless | format jpeg", Format("jpeg"), id="last-format-wins"),
        pytest.param("a.jpg | quality 40", Format("", 40), id="quality-only-empty-name"),
    ],
)
def test_output(text, expected):
    assert parse(text).output == expected


def test_page_and_frame():
    assert parse("a.pdf").page is None
    assert parse("a.pdf").frame is None
    assert parse("a.pdf | page 2 | page 4").page == 4
    assert parse("a.mp4 | frame 1 | frame 50%").frame == Frame(percent=50)


def test_instructions_is_frozen():
    instructions = parse("a.jpg | fit 10x")
    with pytest.raises(AttributeError):
        instructions.source = "b.jpg"  # type: ignore[misc]


# --------------------------------------------------------------------------- canonical form

BASE = "photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless"


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            "  photos/a.jpg  \n\tfill   400x300\tgravity=north \nformat webp  quality=80 lossless ",
            id="whitespace",
        ),
        pytest.param(
            "\n\nphotos/a.jpg\n\n\nfill 400x300 gravity=north\n\nformat webp quality=80 lossless\n\n",
            id="blank-lines",
        ),
        pytest.param(
            "photos/a.jpg | fill 400x300 gravity=north | format webp quality=80 lossless", id="pipes"
        ),
        pytest.param(
            "photos/a.jpg || fill 400x300 gravity=north|\nformat webp quality=80 lossless|", id="empty-steps"
        ),
        pytest.param(
            "photos/a.jpg\r\nfill 400x300 gravity=north\r\nformat webp quality=80 lossless\r\n", id="crlf"
        ),
        pytest.param("photos/a.jpg\nFILL 400X300 GRAVITY=NORTH\nFormat WebP Quality=80 LossLess", id="case"),
        pytest.param(
            "photos/a.jpg\nfill 400x300 gravity=north\nformat webp lossless quality=80", id="flag-order"
        ),
        pytest.param(
            "# thumbnail\nphotos/a.jpg\n  # crop to a box\nfill 400x300 gravity=north\n"
            "format webp quality=80 lossless\n# end",
            id="comments",
        ),
        pytest.param(
            "source photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless",
            id="source-word",
        ),
        pytest.param(
            "./photos//a.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless",
            id="source-spelling",
        ),
        pytest.param(
            "photos/a.jpg\nfill 0400x300 gravity=north\nformat webp quality=080 lossless", id="leading-zeros"
        ),
        pytest.param(
            '"photos/a.jpg"\nfill "400x300" gravity="north"\nformat \'webp\' quality="80" lossless',
            id="quoted-values",
        ),
        pytest.param("photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless", id="same"),
    ],
)
def test_equivalent_texts_have_the_same_canonical_text_and_checksum(variant):
    assert parse(variant).canonical == parse(BASE).canonical
    assert parse(variant).checksum("v1") == parse(BASE).checksum("v1")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("a.jpg|pad 4x3 color=#FFF", "a.jpg|pad 4x3 color=#ffffff", id="colour-spelling"),
        pytest.param("a.jpg|rotate -90.0", "a.jpg|rotate 270", id="rotate-normalised"),
        pytest.param("a.jpg|rotate 450", "a.jpg|rotate 90", id="rotate-mod-360"),
        pytest.param("a.jpg|blur 2.50", "a.jpg|blur 2.5", id="trailing-zero"),
        pytest.param("a.jpg|blur 02.5", "a.jpg|blur 2.5", id="leading-zero"),
        pytest.param("a.jpg|frame 00:01:02.500", "a.jpg|frame 62.5", id="frame-clock"),
        pytest.param("a.jpg|frame 62.5s", "a.jpg|frame 62.5", id="frame-suffix"),
        pytest.param("a.jpg|format jpg", "a.jpg|format jpeg", id="jpg-is-jpeg"),
        pytest.param("a.jpg|sharpen 1.0", "a.jpg|sharpen", id="sharpen-default"),
        pytest.param("a.jpg|fill 4x3 gravity=center", "a.jpg|fill 4x3", id="gravity-default"),
        pytest.param("a.jpg|crop 10.0%,10%,80%,80.00%", "a.jpg|crop 10%,10%,80%,80%", id="crop-numbers"),
        pytest.param("a.jpg|fill 4x3 focus=.5,0.50", "a.jpg|fill 4x3 focus=0.5,0.5", id="focus-numbers"),
    ],
)
def test_equivalent_spellings_have_the_same_canonical_text(first, second):
    assert parse(first).canonical == parse(second).canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        pytest.param("a.jpg", "source a.jpg", id="source-only"),
        pytest.param(
            "media:a.jpg | FIT 400x | fill 10X20 Gravity=South | pad 5x5 color=#AbC",
            "source media:a.jpg\nfit 400x\nfill 10x20 gravity=south\npad 5x5 color=#aabbcc",
            id="boxes",
        ),
        pytest.param(
            "a.jpg|format jpeg quality=90 progressive|rotate -12.50 color=#000|frame 1:00:00.25|crop 1,2,3,4",
            "source a.jpg\nformat jpeg progressive quality=90\nrotate 347.5 color=#000000\nframe 3600.25\n"
            "crop 1,2,3,4",
            id="numbers",
        ),
        pytest.param('"a b.jpg"', 'source "a b.jpg"', id="quoted-space"),
        pytest.param("'x\"y.jpg'", 'source "x\\"y.jpg"', id="quoted-quote"),
        pytest.param("'#1.jpg'", 'source "#1.jpg"', id="quoted-hash"),
        pytest.param('"a=b.jpg"', 'source "a=b.jpg"', id="quoted-equals"),
        pytest.param("a.jpg | blur 0.0000001", "source a.jpg\nblur 0.0000001", id="no-exponent"),
    ],
)
def test_canonical_text(text, canonical):
    assert parse(text).canonical == canonical
    assert parse(canonical).canonical == canonical


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(BASE, id="base"),
        pytest.param("'a \\\\ \"b\" | c.jpg' | crop 10%,0%,50%,100%", id="awkward-source"),
        pytest.param("a.jpg | upscale | fit x3 | quality 7 | page 2 | frame 5% | flip vertical", id="mixed"),
        pytest.param("a.jpg | rotate 0.1 | rotate 359.99999 | sharpen 9.75 | grayscale", id="numbers"),
    ],
)
def test_canonical_is_idempotent_and_parses_to_the_same_instructions(text):
    instructions = parse(text)
    again = parse(instructions.canonical)
    assert again == instructions
    assert again.canonical == instructions.canonical


# --------------------------------------------------------------------------- checksum


def test_checksum_shape_and_definition():
    value = checksum("source a.jpg", "123:456")
    assert is_checksum(value)
    assert len(value) == CHECKSUM_LENGTH == 32
    assert parse("a.jpg").checksum("123:456") == value
    assert PROCESSING_VERSION == "1"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("source a.jpg", "v1", "1"), ("source a.jpg", "v1", "2"), id="processing-version"),
        pytest.param(("source a.jpg", "v1", "1"), ("source a.jpg", "v2", "1"), id="source-version"),
        pytest.param(("source a.jpg", "v1", "1"), ("source b.jpg", "v1", "1"), id="canonical-text"),
        # The parts must not run into each other.
        pytest.param(("source a.jpg", "v1\n", "1"), ("\nsource a.jpg", "v1", "1"), id="separated"),
        pytest.param(("source a.jpg", "", "1"), ("source a.jpg", "0:", "1"), id="length-prefixed"),
    ],
)
def test_checksum_changes(first, second):
    (text_a, version_a, salt_a), (text_b, version_b, salt_b) = first, second
    assert checksum(text_a, version_a, processing_version=salt_a) != checksum(
        text_b, version_b, processing_version=salt_b
    )


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param("b.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless", id="source"),
        pytest.param("photos/a.jpg\nfill 401x300 gravity=north\nformat webp quality=80 lossless", id="size"),
        pytest.param(
            "photos/a.jpg\nfill 400x300 gravity=south\nformat webp quality=80 lossless", id="gravity"
        ),
        pytest.param(
            "photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=81 lossless", id="quality"
        ),
        pytest.param("photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80", id="flag"),
        pytest.param("photos/a.jpg\nformat webp quality=80 lossless\nfill 400x300 gravity=north", id="order"),
        pytest.param(
            "photos/a.jpg\nfill 400x300 gravity=north\nformat avif quality=80 lossless", id="format"
        ),
        pytest.param(
            "photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless\nupscale",
            id="extra-step",
        ),
    ],
)
def test_checksum_changes_with_any_meaningful_change(changed):
    assert parse(changed).checksum("v") != parse(BASE).checksum("v")


def test_checksum_is_sha256_of_salt_version_and_text():
    salt = f"fileproc-wsgi processing v{PROCESSING_VERSION}\n"
    expected = hashlib.sha256(f"{salt}2:v1\nsource a.jpg".encode()).hexdigest()[:32]
    assert checksum("source a.jpg", "v1") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0123456789abcdef0123456789abcdef", True, id="valid"),
        pytest.param("0123456789ABCDEF0123456789ABCDEF", False, id="upper-case"),
        pytest.param("0123456789abcdef0123456789abcde", False, id="too-short"),
        pytest.param("0123456789abcdef0123456789abcdef0", False, id="too-long"),
        pytest.param("0123456789abcdef0123456789abcdeg", False, id="not-hex"),
        pytest.param("0123456789abcdef0123456789abcdef\n", False, id="newline"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_checksum(text, expected):
    assert is_checksum(text) is expected


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "column", "step", "message"),
    [
        pytest.param("", 1, 1, None, "expected a source first", id="no-source-empty"),
        pytest.param("# only a comment\n\n", 1, 1, None, "got no steps", id="no-source-comments"),
        pytest.param("fit 400x300", 1, 1, "fit", "expected a source first", id="no-source-operation-first"),
        pytest.param(
            "a.jpg\n  fitt 400x300",
            2,
            3,
            "fitt",
            "unknown operation 'fitt'; expected one of: background,",
            id="unknown-operation",
        ),
        pytest.param("a.jpg | fit 1x1 2x2", 1, 17, "fit", "too many arguments", id="too-many-arguments"),
        pytest.param(
            "a.jpg fit 10x", 1, 7, "source", "'fit' after the source reads as an operation", id="missing-pipe"
        ),
        pytest.param(
            "my a.jpg fill 4x4 gravity=north format webp",
            1,
            10,
            "source",
            "(my a.jpg | fill 4x4 gravity=north format webp)",
            id="missing-pipe-before-several-steps",
        ),
        pytest.param(
            "a.jpg\nfit", 2, 1, "fit", "too few arguments: expected fit WxH", id="too-few-arguments"
        ),
        pytest.param(
            "source", 1, 1, "source", "too few arguments: expected source <ref>", id="too-few-source"
        ),
        pytest.param(
            "a.jpg\nfit 400by300",
            2,
            5,
            "fit",
            "expected a size like 400x300, 400x or x300, got '400by300'",
            id="unparsable-size",
        ),
        pytest.param("a.jpg\nfill 400x", 2, 6, "fill", "expected both sides", id="size-needs-both-sides"),
        pytest.param("a.jpg\nresize x", 2, 8, "resize", "expected a size like 400x300", id="size-no-sides"),
        pytest.param("a.jpg\nfit 16385x", 2, 5, "fit", "width must be from 1 to 16384", id="size-too-big"),
        pytest.param("a.jpg\nfit x0", 2, 5, "fit", "height must be from 1 to 16384", id="size-zero"),
        pytest.param(
            "a.jpg | blur 101",
            1,
            14,
            "blur",
            "must be greater than 0 and at most 100",
            id="out-of-range-blur",
        ),
        pytest.param(
            "a.jpg | sharpen 0", 1, 17, "sharpen", "must be greater than 0", id="out-of-range-sharpen"
        ),
        pytest.param("a.jpg | page 0", 1, 14, "page", "must be from 1", id="out-of-range-page"),
        pytest.param(
            "a.jpg | quality 101", 1, 17, "quality", "must be from 1 to 100", id="out-of-range-quality"
        ),
        pytest.param(
            "a.jpg | format webp quality=0",
            1,
            29,
            "format",
            "must be from 1 to 100",
            id="out-of-range-format-quality",
        ),
        pytest.param("a.jpg | crop 10%,10%,80%,101%", 1, 14, "crop", "from 0 to 100", id="out-of-range-crop"),
        pytest.param("a.jpg | crop 1,1,0,5", 1, 14, "crop", "greater than 0", id="crop-empty"),
        pytest.param("a.jpg | crop -1,1,5,5", 1, 14, "crop", "must not be negative", id="crop-negative"),
        pytest.param(
            "a.jpg | crop 1,2,3", 1, 14, "crop", "expected a crop like X,Y,W,H", id="crop-three-values"
        ),
        pytest.param("a.jpg | crop 10%,10,80%,80%", 1, 14, "crop", "all in percent", id="crop-mixed-units"),
        pytest.param(
            "a.jpg | fill 4x4 focus=1.5,0",
            1,
            24,
            "fill",
            "focus must be from 0 to 1",
            id="out-of-range-focus",
        ),
        pytest.param("a.jpg | frame 101%", 1, 15, "frame", "from 0 to 100", id="out-of-range-frame"),
        pytest.param(
            "a.jpg | fit 4x4 color=#fff", 1, 17, "fit", "unknown key 'color' for step 'fit'", id="unknown-key"
        ),
        pytest.param(
            "a.jpg | fill 4x4 Colour=#fff",
            1,
            18,
            "fill",
            "expected one of: focus, gravity",
            id="unknown-key-lists-keys",
        ),
        pytest.param(
            "a.jpg | fill 4x4 gravity=up",
            1,
            26,
            "fill",
            "expected gravity to be one of center",
            id="bad-key-value-gravity",
        ),
        pytest.param(
            "a.jpg | format webp quality=high",
            1,
            29,
            "format",
            "expected a whole number for quality",
            id="bad-key-value-quality",
        ),
        pytest.param(
            "a.jpg | fill 4x4 focus=0.5",
            1,
            24,
            "fill",
            "expected a focus like 0.5,0.3",
            id="bad-key-value-focus",
        ),
        pytest.param("a.jpg | pad 4x4 color=", 1, 23, "pad", "expected a colour", id="empty-key-value"),
        pytest.param(
            "a.jpg | format webp quality=8 QUALITY=9",
            1,
            31,
            "format",
            "duplicate key 'quality'",
            id="duplicate-key",
        ),
        pytest.param(
            "a.jpg | format webp lossless lossless",
            1,
            30,
            "format",
            "duplicate flag 'lossless'",
            id="duplicate-flag",
        ),
        pytest.param(
            "a.jpg | format webp quality", 1, 21, "format", "expected quality=<value>", id="key-given-as-flag"
        ),
        pytest.param(
            "a.jpg | format webp lossless=yes",
            1,
            21,
            "format",
            "'lossless' is a flag",
            id="flag-given-as-key",
        ),
        pytest.param(
            'a.jpg\nfit "400x300', 2, 5, "fit", "unterminated quote", id="unterminated-double-quote"
        ),
        pytest.param(
            "a.jpg | pad 4x4 color='#fff",
            1,
            23,
            "pad",
            "expected a closing '",
            id="unterminated-single-quote",
        ),
        pytest.param('"a.jpg\nfit 4x4', 1, 1, None, "unterminated quote", id="unterminated-quote-in-source"),
        pytest.param(
            "source 'b", 1, 8, "source", "unterminated quote", id="unterminated-quote-after-source-word"
        ),
        pytest.param('a.jpg | fit "4x4\\"', 1, 13, "fit", "unterminated quote", id="escaped-closing-quote"),
        pytest.param(
            "a.jpg | background red",
            1,
            20,
            "background",
            "expected a colour like #rrggbb or #rgb",
            id="bad-colour-name",
        ),
        pytest.param(
            "a.jpg | background #12345", 1, 20, "background", "got '#12345'", id="bad-colour-length"
        ),
        pytest.param(
            "a.jpg | rotate 5 color=#ggg", 1, 24, "rotate", "expected a colour", id="bad-colour-hex"
        ),
        pytest.param(
            "fit 4x4 | source a.jpg", 1, 11, "source", "source must be the first step", id="source-not-first"
        ),
        pytest.param("a.jpg\nsource b.jpg", 2, 1, "source", "source given twice", id="source-twice"),
        pytest.param(
            "source a.jpg\nSource b.jpg", 2, 1, "source", "source given twice", id="source-word-twice"
        ),
        pytest.param("source ./", 1, 8, "source", "expected a source reference", id="empty-source"),
        pytest.param(
            "a.mp4 | frame soon", 1, 15, "frame", "expected a frame time like 2.5, 2.5s", id="bad-frame-time"
        ),
        pytest.param("a.mp4 | frame 1:60", 1, 15, "frame", "below 60", id="bad-frame-seconds"),
        pytest.param("a.mp4 | frame 1:60:00", 1, 15, "frame", "below 60", id="bad-frame-minutes"),
        pytest.param("a.mp4 | frame -1", 1, 15, "frame", "expected a frame time", id="negative-frame-time"),
        pytest.param(
            "a.jpg | format png lossless",
            1,
            20,
            "format",
            "'lossless' is only valid for webp or avif",
            id="lossless-not-for-png",
        ),
        pytest.param(
            "a.jpg | format webp progressive",
            1,
            21,
            "format",
            "'progressive' is only valid for jpeg",
            id="progressive-not-for-webp",
        ),
        pytest.param(
            "a.jpg | format bmp", 1, 16, "format", "expected a format, one of jpeg", id="bad-format"
        ),
        pytest.param(
            "a.jpg | fill 4x4 gravity=north focus=0.5,0.5",
            1,
            32,
            "fill",
            "either gravity= or focus=",
            id="gravity-with-focus",
        ),
        pytest.param(
            "a.jpg | flip sideways", 1, 14, "flip", "expected horizontal or vertical", id="bad-flip"
        ),
        pytest.param(
            "a.jpg | rotate ninety", 1, 16, "rotate", "expected a number of degrees", id="bad-rotate"
        ),
        pytest.param("a.jpg | rotate 1e3", 1, 16, "rotate", "got '1e3'", id="no-exponents"),
        pytest.param("a.jpg | page 1.5", 1, 14, "page", "expected a whole number", id="page-not-integer"),
        pytest.param("a.jpg | page " + "9" * 5000, 1, 14, "page", "must be from 1", id="page-huge"),
        pytest.param("a.jpg | upscale 2", 1, 17, "upscale", "too many arguments", id="upscale-no-arguments"),
    ],
)
def test_instruction_errors(text, line, column, step, message):
    with pytest.raises(InstructionError) as caught:
        parse(text)
    error = caught.value
    assert (error.line, error.column, error.step) == (line, column, step)
    assert message in error.problem
    assert str(error).startswith(f"line {line}, column {column}")
    assert isinstance(error, ValueError)


def test_error_message_names_step_line_and_column():
    with pytest.raises(InstructionError) as caught:
        parse("a.jpg\nfit 400by300")
    assert str(caught.value) == (
        "line 2, column 5, step 'fit': expected a size like 400x300, 400x or x300, got '400by300'"
    )


# --------------------------------------------------------------------------- predicted size


@pytest.mark.parametrize(
    ("text", "source_size", "expected"),
    [
        pytest.param("a | fit 400x300", (800, 800), (300, 300), id="fit-box"),
        pytest.param("a | fit 400x", (800, 600), (400, 300), id="fit-width"),
        pytest.param("a | fit x300", (800, 600), (400, 300), id="fit-height"),
        pytest.param("a | fit 400x300", (100, 50), (100, 50), id="fit-never-enlarges"),
        pytest.param("a | fit 400x300 | upscale", (100, 50), (400, 200), id="fit-upscale"),
        pytest.param("a | fill 400x300", (1000, 1000), (400, 300), id="fill"),
        pytest.param("a | fill 400x300", (200, 600), (200, 150), id="fill-small-source"),
        pytest.param("a | upscale | fill 400x300", (200, 600), (400, 300), id="fill-upscale"),
        pytest.param("a | pad 400x300", (10, 10), (400, 300), id="pad"),
        pytest.param("a | resize 40x30", (10, 10), (40, 30), id="resize"),
        pytest.param("a | crop 10,10,50,20", (100, 100), (50, 20), id="crop-pixels"),
        pytest.param("a | crop 10,10,500,20", (100, 100), (90, 20), id="crop-clipped"),
        pytest.param("a | crop 0%,0%,50%,25%", (200, 100), (100, 25), id="crop-percent"),
        pytest.param("a | crop 500,0,10,10", (100, 100), None, id="crop-outside"),
        pytest.param("a | rotate 90", (200, 100), (100, 200), id="rotate-90"),
        pytest.param("a | rotate -180", (200, 100), (200, 100), id="rotate-180"),
        pytest.param("a | rotate 45", (100, 100), (142, 142), id="rotate-45"),
        pytest.param("a | rotate 90 | fit 50x", (200, 100), (50, 100), id="rotate-then-fit"),
        pytest.param("a | grayscale | format png | quality 5", (7, 9), (7, 9), id="no-size-change"),
        pytest.param("a | fit 10x", (0, 10), None, id="empty-source"),
    ],
)
def test_predict_size(text, source_size, expected):
    assert parse(text).predict_size(*source_size) == expected


# --------------------------------------------------------------------------- properties


def _number_text(draw, low: float, high: float, *, open_low: bool = False) -> str:
    value = draw(
        st.decimals(low, high, places=draw(st.integers(0, 3)), allow_nan=False, allow_infinity=False)
    )
    if open_low and value == low:
        value = high
    return str(value)


@st.composite
def _size(draw, both: bool) -> str:
    width, height = draw(st.integers(1, 16384)), draw(st.integers(1, 16384))
    form = "both" if both else draw(st.sampled_from(["both", "width", "height"]))
    text = {"both": f"{width}x{height}", "width": f"{width}x", "height": f"x{height}"}[form]
    return text.replace("x", draw(st.sampled_from("xX")))


_COLOURS = st.builds(
    lambda digits, short: "#" + (digits[:3] if short else digits),
    st.text("0123456789abcdefABCDEF", min_size=6, max_size=6),
    st.booleans(),
)


@st.composite
def _step(draw) -> tuple[str, list[str], list[str]]:
    """One valid step: (word, positional and flag tokens, key=value tokens)."""
    word = draw(st.sampled_from(sorted(OPERATION_WORDS)))
    keys: list[str] = []
    args: list[str] = []
    if word == "fit":
        args = [draw(_size(False))]
    elif word in ("fill", "pad", "resize"):
        args = [draw(_size(True))]
        if word == "fill":
            choice = draw(st.sampled_from(["none", "gravity", "focus"]))
            if choice == "gravity":
                keys = [f"gravity={draw(st.sampled_from(['center', 'north', 'SouthEast', 'west']))}"]
            elif choice == "focus":
                keys = [f"focus={_number_text(draw, 0, 1)},{_number_text(draw, 0, 1)}"]
        elif word == "pad" and draw(st.booleans()):
            keys = [f"color={draw(_COLOURS)}"]
    elif word == "crop":
        if draw(st.booleans()):
            args = [",".join([_number_text(draw, 0, 100) + "%"] * 2 + [_number_text(draw, 1, 100) + "%"] * 2)]
        else:
            args = [",".join(str(draw(st.integers(low, 5000))) for low in (0, 0, 1, 1))]
    elif word == "rotate":
        args = [_number_text(draw, -1000, 1000)]
        if draw(st.booleans()):
            keys = [f"color={draw(_COLOURS)}"]
    elif word == "flip":
        args = [draw(st.sampled_from(["horizontal", "vertical"]))]
    elif word == "blur":
        args = [_number_text(draw, 0, 100, open_low=True)]
    elif word == "sharpen" and draw(st.booleans()):
        args = [_number_text(draw, 0, 10, open_low=True)]
    elif word == "background":
        args = [draw(_COLOURS)]
    elif word == "page":
        args = [str(draw(st.integers(1, 999)))]
    elif word == "frame":
        args = [draw(st.sampled_from(["2.5", "2.5s", "00:01:02.5", "01:02", "10%", "0", "100%"]))]
    elif word == "format":
        name = draw(st.sampled_from(["jpeg", "jpg", "png", "webp", "avif", "gif"]))
        args = [name]
        if name in ("webp", "avif") and draw(st.booleans()):
            args.append("lossless")
        if name in ("jpeg", "jpg") and draw(st.booleans()):
            args.append("progressive")
        if draw(st.booleans()):
            keys = [f"quality={draw(st.integers(1, 100))}"]
    elif word == "quality":
        args = [str(draw(st.integers(1, 100)))]
    return word, args, keys


_SOURCES = st.one_of(
    st.sampled_from(["a.jpg", "media:photos/b.png", "https://cdn.example.com/c.webp", "s3://bucket/d.gif"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=20).filter(
        lambda text: text.strip() not in ("", ".", "./")
    ),
)


def _quote_source(source: str) -> str:
    return '"' + source.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _rendering(draw, source: str, steps: list[tuple[str, list[str], list[str]]]) -> str:
    """One of the many ways to write the same instructions."""
    space = st.sampled_from([" ", "  ", "\t", " \t "])

    def case(word: str) -> str:
        return draw(st.sampled_from([word.lower(), word.upper(), word.capitalize()]))

    lines = [f"source {_quote_source(source)}" if draw(st.booleans()) else _quote_source(source)]
    for word, args, keys in steps:
        keys = draw(st.permutations(keys))
        keys = [case(key.split("=", 1)[0]) + "=" + key.split("=", 1)[1] for key in keys]
        tokens = [case(word), *args, *keys]
        lines.append(draw(space).join(tokens))
    text = lines[0]
    for line in lines[1:]:
        text += draw(st.sampled_from(["\n", " | ", "|", "\n\n  ", "\n# a comment\n", "\r\n", " ||\n"])) + line
    return (
        draw(st.sampled_from(["", "\n", "  ", "# head\n"])) + text + draw(st.sampled_from(["", "\n", " | "]))
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_parse_only_raises_instruction_error(text):
    try:
        parse(text)
    except InstructionError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [*"ax0123456789.,%#:=|'\" \n\\-", "fit ", "fill ", "crop ", "format ", "rotate ", "frame "]
        ),
        max_size=30,
    ).map("".join)
)
def test_parse_only_raises_instruction_error_for_near_miss_text(text):
    try:
        instructions = parse("a.jpg\n" + text)
    except InstructionError:
        return
    assert parse(instructions.canonical) == instructions


@settings(max_examples=300, deadline=None)
@given(st.data(), _SOURCES, st.lists(_step(), max_size=6))
def test_renderings_of_valid_steps_share_canonical_text_and_checksum(data, source, steps):
    first = parse(data.draw(_rendering(source, steps)))
    second = parse(data.draw(_rendering(source, steps)))
    assert first.canonical == second.canonical
    assert first.checksum("v") == second.checksum("v")
    again = parse(first.canonical)
    assert again == first
    assert again.canonical == first.canonical
    assert len(first.steps) == len(steps)


# Texts as sites have them in their templates, with the checksums (version "v1") that the
# code before source names without quotes gave: their results must keep their URLs.
_EXISTING = [
    ("photo.jpg | fit 300x", "efa03cfb5bdb10dc0ed3ff6abf793960"),
    (
        "photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80 lossless",
        "930c1d67cf10bf9345a3df67b94bdd24",
    ),
    (
        "media:a.jpg | FIT 400x | fill 10X20 Gravity=South | pad 5x5 color=#AbC",
        "d53ec92446d786dd01ffbaf3dce5bcdf",
    ),
    (
        "a.jpg|format jpeg quality=90 progressive|rotate -12.50 color=#000|frame 1:00:00.25|crop 1,2,3,4",
        "1bfba527a6784599a9d0b98f975c758d",
    ),
    ('"a b.jpg" | fit 10x', "ca06a9b6c9912e6c2162310495f312b7"),
    ("'x\"y.jpg'", "132731b138f0a9fd12df5e2fc26817f4"),
    ("'#1.jpg'", "0cfb42592b28f4c0948284748720c96e"),
    ('"a=b.jpg"', "999c3ac5ef7b87b22fc953fa2a3457be"),
    ("'a \\\\ \"b\" | c.jpg' | crop 10%,0%,50%,100%", "da5f49f14404950dd761bd74fddc0f6c"),
    (
        "a.jpg | upscale | fit x3 | quality 7 | page 2 | frame 5% | flip vertical",
        "fa539fed7b9edb7461cbf82298f4b373",
    ),
    ("a.jpg | rotate 0.1 | rotate 359.99999 | sharpen 9.75 | grayscale", "c267e9c0326c6ce713d5f049e179ed3b"),
    ("https://cdn.example.com//a.jpg | fill 200x100 focus=0.25,1", "6d91eca423c47d5533929629796df681"),
    ("s3://bucket/key.png | pad 400x300 | background #fff | blur 2.5", "14f658bb89b04f1806955f3ead35a282"),
    ('source photos/"my cat".jpg | resize 10x20', "78d2b8fd7a7add5aa10558a02f3cec7c"),
    ("photo=1.jpg | fit 10x", "025dc1a9150b86096642696a028df4d5"),
    ("./photos//a.jpg\n# comment\nfit 400x300", "7f164f22ad0025627220f448c7b2c631"),
    ("a.mp4 | frame 2.5s | fit 640x", "93a0bd38b9ece6ac0e2ea39af63bfb91"),
    ("scan.tiff | page 2 | fit 300x300", "65f7037d171844ceb6538d0cbd066544"),
    ("logo.png | fit 300x\nformat avif", "8b3036a2a913d5c78680767a11ed484d"),
    ("tom&jerry.png | fill 50x50 gravity=southeast", "6ceebe217f4db62cd06560f5fb17104f"),
]


@pytest.mark.parametrize(("text", "expected"), _EXISTING)
def test_existing_texts_keep_their_checksums(text, expected):
    assert parse(text).checksum("v1") == expected


_WORD = st.text(
    st.characters(codec="utf-8", exclude_characters="\"'|", exclude_categories=["Zs", "Zl", "Zp", "Cc"]),
    min_size=1,
    max_size=8,
).filter(lambda word: word.lower() not in OPERATION_WORDS and word.lower() != "source" and "=" not in word)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_WORD, st.sampled_from([" ", "  ", "\t", " \t "])), min_size=1, max_size=5))
def test_a_name_of_words_needs_no_quotes(pieces):
    name = "".join(word + space for word, space in pieces).rstrip()
    if name.startswith("#"):
        return  # a comment line, as always
    assert parse(f"{name} | fit 10x").source == canonical_source(name)
    assert parse(f"source {name}\nfit 10x").source == canonical_source(name)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=30))
def test_source_step_quotes_any_name_so_it_reads_back(name):
    if not canonical_source(name):
        return
    instructions = parse(f"{source_step(name)}\nfit 10x")
    assert instructions.source == canonical_source(name)
    assert parse(instructions.canonical) == instructions


def test_source_step_refuses_a_line_break():
    with pytest.raises(InstructionError, match="has a line break"):
        source_step("a\nb.jpg")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("fit 10x", ("fit", 1, 1), id="operation"),
        pytest.param("\n  # note\n   'a b.jpg' | fit 3x", ("'a b.jpg'", 3, 4), id="quoted-as-written"),
        pytest.param("  ", None, id="no-step"),
        pytest.param(" | fit 3x", ("fit", 1, 4), id="empty-first-step"),
    ],
)
def test_leading_word(text, expected):
    assert leading_word(text) == expected


@pytest.mark.parametrize(
    ("text", "empty"),
    [
        pytest.param(" | fit 3x", True, id="nothing-before-the-pipe"),
        pytest.param("\n  # a note, with a | in it\n\n  |fit 3x", True, id="after-comments-and-blanks"),
        pytest.param("source | fit 3x", True, id="source-word-without-name"),
        pytest.param("SOURCE\nfit 3x", True, id="source-word-alone-on-its-line"),
        pytest.param("a.jpg | fit 3x", False, id="a-source"),
        pytest.param("source a.jpg\n| fit 3x", False, id="pipe-on-a-later-line"),
        pytest.param('"source" | fit 3x', False, id="a-file-named-source"),
        pytest.param("source=a.jpg | fit 3x", False, id="a-key-is-no-source-word"),
        pytest.param("\n\nfit 3x", False, id="operations-alone-on-the-first-line"),
        pytest.param("", False, id="no-step"),
    ],
)
def test_has_empty_source(text, empty):
    assert has_empty_source(text) is empty


@pytest.mark.parametrize(
    ("text", "density", "expected"),
    [
        pytest.param("a.jpg | fit 300x", 2, "source a.jpg\nfit 600x", id="fit"),
        pytest.param(
            "a.jpg | fit 333x | format webp", 1.5, "source a.jpg\nfit 500x\nformat webp", id="half-up"
        ),
        pytest.param(
            "a.jpg | fill 100x80 gravity=smart | pad 120x90 color=#fff | resize 50x40",
            3,
            "source a.jpg\nfill 300x240 gravity=smart\npad 360x270 color=#ffffff\nresize 150x120",
            id="every-size",
        ),
        pytest.param(
            "a.jpg | crop 10,10,500,500 | fit 200x | crop 0,0,100,50 | crop 10%,0%,50%,50% | blur 2",
            2,
            "source a.jpg\ncrop 10,10,500,500\nfit 400x\ncrop 0,0,200,100\ncrop 10%,0%,50%,50%\nblur 4",
            id="output-pixels-scale-source-pixels-stay",
        ),
        pytest.param("a.jpg | format png", 2, "source a.jpg\nformat png", id="nothing-to-scale"),
        pytest.param("a.jpg | fit 9000x", 2, None, id="too-large"),
        pytest.param("a.jpg | fit 300x | blur 60", 2, "source a.jpg\nfit 600x\nblur 100", id="blur-bounded"),
    ],
)
def test_at_density(text, density, expected):
    assert parse(text).at_density(density) == expected


def test_at_density_is_twice_the_size_for_any_source():
    instructions = parse("a.jpg | fill 300x200 | crop 10,10,100,100")
    doubled = parse(instructions.at_density(2))
    for size in [(4000, 3000), (640, 640), (601, 401)]:
        assert doubled.predict_size(*size) == tuple(2 * side for side in instructions.predict_size(*size))


@dataclasses.dataclass(frozen=True)
class _Border(PluginOperation):
    """A plugin step in output pixels, which says how it scales."""

    word: ClassVar[str] = "border"
    pixels: int

    def canonical_arguments(self) -> tuple[str, ...]:
        return (str(self.pixels),)

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width + 2 * self.pixels, height + 2 * self.pixels

    def scaled(self, factor: float) -> _Border:
        return _Border(round(self.pixels * factor))


@dataclasses.dataclass(frozen=True)
class _Rule(_Border):
    """The same step keeping the default scaled(): unchanged."""

    word: ClassVar[str] = "rule"
    scaled = PluginOperation.scaled


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param((Fit(160, None), _Border(2)), "fit 320x\nborder 4", id="scaled-after-fit"),
        pytest.param((_Border(2), Fit(160, None)), "border 2\nfit 320x", id="source-pixels-before-fit"),
        pytest.param((Fit(160, None), _Rule(2)), "fit 320x\nrule 2", id="default-unchanged"),
    ],
)
def test_at_density_scales_a_plugin_step_after_a_resize_as_it_says(steps, expected):
    instructions = Instructions("a.jpg", steps)
    assert instructions.at_density(2) == f"source a.jpg\n{expected}"
    if expected.endswith("border 4"):  # the same picture with twice the pixels
        doubled = Instructions("a.jpg", (Fit(320, None), _Border(4)))
        assert doubled.predict_size(400, 300) == (328, 248) == (2 * 164, 2 * 124)
        assert instructions.predict_size(400, 300) == (164, 124)


def test_fill_gravity_takes_the_dashed_spelling_as_the_built_in_name():
    assert parse("a.jpg | fill 4x4 gravity=South-East").steps == (Fill(4, 4, gravity="southeast"),)
    canonical = parse("a.jpg | fill 4x4 gravity=north-west").canonical
    assert canonical == "source a.jpg\nfill 4x4 gravity=northwest"
    with pytest.raises(InstructionError, match=r"got 'south_east'"):
        parse("a.jpg | fill 4x4 gravity=south_east")


def test_smart_gravity_parses_and_is_listed_in_the_error():
    assert parse("a.jpg | fill 4x4 gravity=Smart").steps == (Fill(4, 4, gravity="smart"),)
    assert parse("a.jpg | fill 4x4 gravity=smart").canonical == "source a.jpg\nfill 4x4 gravity=smart"
    with pytest.raises(InstructionError, match=r"one of center, north, .*, southwest, smart, got 'clever'"):
        parse("a.jpg | fill 4x4 gravity=clever")


def test_instructions_can_be_built_directly():
    assert Instructions("a.jpg", (Fit(4, None),)).canonical == "source a.jpg\nfit 4x"


def test_parsing_is_fast():
    text = "media:photos/a.jpg\nfill 400x300 gravity=north\nformat webp quality=80"
    best = min(timeit.repeat(lambda: parse(text), number=200, repeat=5)) / 200
    # Generous against slow CI machines; a typical 3-line text parses in about 20 µs.
    assert best < 200e-6


def test_every_gravity_is_documented():
    page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "instructions.md").read_text()
    table = page.split("## Gravity", 1)[1].split("\n## ", 1)[0]
    assert all(f"`{name}`" in table for name in GRAVITY_NAMES)
    for example in ("photos/my cat.jpg", "Bob's photo.jpg", '"a|b.jpg"', "'#1.jpg'", "media:photos/a.jpg"):
        assert f"`{example}`" in page
        parse(f"{example} | fill 10x10 gravity=smart")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.png | fit 10x", None),
        ("a.png | background #f00 | fit 10x", "#ff0000"),
        ("a.png | background #ff0000 | fit 10x | background #00f", "#0000ff"),
    ],
)
def test_the_background_is_the_last_background_steps_colour(text, expected):
    assert parse(text).background == expected
