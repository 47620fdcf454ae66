"""The bad-input and fault catalogue of issue 5: one table per kind of trouble.

Each case asserts the answer's status and its one-line message (no traceback, no server
path), and that nothing was lost or left half-written: no temporary or partial file among
the results, the store row in the state it should be in, nothing registered for input that
was refused. The tables: routing and checksums, instruction text (with Hypothesis
properties), sources, decoders, the register endpoint, concurrency, and outages; sources
that change into something refused after they were registered come last.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from webob import Request

from fileproc_wsgi.errors import FileProcError, InstructionError, LeaseLostError
from fileproc_wsgi.instructions import parse
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.registrar import Registrar
from fileproc_wsgi.remote import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from fileproc_wsgi.store import InstructionStore
from support import Site, decode, halves, write

UNREGISTERED = "0123456789abcdef0123456789abcdef"
SECRET = "a shared secret of some length"
# Registering reads a header and writes a row: anything slower is work done at render time.
REGISTRATION_BUDGET = 0.5


# --------------------------------------------------------------------------- helpers


def _files(site) -> list[str]:
    """Every file under the results directory, temporary ones included, as sorted relative paths."""
    results = site.root / "results"
    if not results.is_dir():
        return []
    return sorted(str(path.relative_to(results)) for path in results.rglob("*") if not path.is_dir())


def _partial(site) -> list[str]:
    return [name for name in _files(site) if name.endswith(".part") or "/.tmp-" in f"/{name}"]


def _checksum_of(url: str) -> str:
    return url.rpartition("/")[2].partition(".")[0]


def _rows(site) -> dict[str, tuple[str, int, int]]:
    return {job.checksum: (job.state, job.attempts, job.token) for job in site.store.list(limit=1000)}


def _assert_one_line(response, site) -> None:
    """An error answer: one line of text, no traceback, no server path, never cached."""
    text = response.text
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "Traceback" not in text
    assert str(site.root) not in text
    assert response.headers["Cache-Control"] == "no-store"


def _assert_made(site, representation, response) -> None:
    """A 301 to a complete, decodable result of the predicted size, made from a row now done."""
    assert response.status_int == 301, response.text
    job = site.store.get(representation.checksum)
    assert job.state == "done"
    assert _files(site) == [job.result_key]
    served = site.get(response.location)
    assert served.status_int == 200
    image = decode(served.body)
    assert (image.width, image.height) == (job.width, job.height)
    if representation.width is not None:
        assert (image.width, image.height) == (representation.width, representation.height)


def _register_quickly(site, text: str):
    started = time.perf_counter()
    try:
        return site.registrar.register(text)
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < REGISTRATION_BUDGET, f"registering took {elapsed:.2f} s: work done at render time"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int, height: int, *, depth: int = 8, colour: int = 2, data: bytes = b"", crc: bool = True
) -> bytes:
    """A PNG written by hand: any header Pillow would refuse to write, and any image data."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    if not crc:
        header = header[:-4] + b"\0\0\0\0"
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _png_rgb16(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow reads these but cannot write them)."""
    row = b"\0" + b"".join(struct.pack(">HHH", 65535, 0, x * 65535 // width) for x in range(width))
    return _png(width, height, depth=16, data=zlib.compress(row * height))


def _gif(width: int, height: int, frames: int) -> bytes:
    """An animation of ``frames`` one-pixel frames on a ``width`` x ``height`` canvas: a few
    bytes a frame, while reaching frame N decodes N canvases."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF0, 0, 0) + b"\0\0\0\xff\0\0")
    for index in range(frames):
        out += b"\x21\xf9\x04\x04\x01\x00\x00\x00"  # graphic control: keep the canvas, 10 ms
        out += b"\x2c" + struct.pack("<HHHHB", index % width, index // width % height, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW: clear, colour 0, end
    return bytes(out + b"\x3b")


def _encoded(image: Image.Image, image_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


# Source makers: each puts one thing at ``media/name`` (or replaces what is there).


def _data(data: bytes | Callable[[], bytes]):
    def make(path, root):
        path.write_bytes(data() if callable(data) else data)

    return make


def _image(image_format: str, image: Callable[[], Image.Image] = lambda: halves(60, 40), **params):
    return _data(lambda: _encoded(image(), image_format, **params))


def _symlink(target: Callable[[object], str]):
    def make(path, root):
        (root / "outside.png").write_bytes(_encoded(halves(60, 40), "PNG"))
        os.symlink(target(root), path)

    return make


def _fifo(path, root):
    os.mkfifo(path)


def _directory(path, root):
    path.mkdir()


def _device(path, root):
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a copy of /dev/null


def _nothing(path, root):
    pass


def _replacing(make):
    """The maker used after registration: the good file goes, ``make`` puts something else."""

    def replace(path, root):
        path.unlink()
        make(path, root)

    return replace


def _run_source_case(site, text: str, make, phase: str, status: int, message: str) -> None:
    """One row of the sources or decoders table.

    ``register``: refused while registering, nothing stored. ``request``: registered, then
    answered on first request. ``replaced``: registered while a good image, replaced by
    ``make`` before the first request.
    """
    name = parse(text).source
    path = site.media / name
    if phase == "replaced":
        path.write_bytes(_encoded(halves(60, 40), "PNG"))
        representation = _register_quickly(site, text)
        _replacing(make)(path, site.root)
    else:
        make(path, site.root)
        if phase == "register":
            with pytest.raises(FileProcError) as refused:
                _register_quickly(site, text)
            error = refused.value
            assert error.status == status, str(error)
            assert message in str(error)
            assert "\n" not in str(error) and str(site.root) not in str(error)
            assert site.store.count_by_state() == {}, "nothing is registered for refused input"
            return
        representation = _register_quickly(site, text)

    response = site.get(representation.url)
    if status == 301:
        _assert_made(site, representation, response)
        return
    assert response.status_int == status, response.text
    assert message in response.text
    _assert_one_line(response, site)
    job = site.store.get(representation.checksum)
    assert (job.state, job.failure_status, job.retry_at, job.attempts) == ("failed", status, None, 1)
    again = site.get(representation.url)
    assert (again.status_int, again.text) == (response.status_int, response.text)
    assert site.store.get(representation.checksum).attempts == 1, "a permanent failure is not retried"
    assert _files(site) == []


# =========================================================================== routing and checksums


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """One site for the whole table (no row may change it): a checksum registered and never
    asked for ({p}; {q} for the one row that could start work by mistake), and one made."""
    site = Site(tmp_path_factory.mktemp("routing"))
    write(site.media, "photo.jpg", halves(60, 40))
    pending = site.registrar.register("photo.jpg | fit 30x").checksum
    spare = site.registrar.register("photo.jpg | fit 25x").checksum
    done = site.registrar.register("photo.jpg | fit 20x").checksum
    assert site.get(f"/_fp/{done}.jpg").status_int == 301
    (site.root / "results" / done[:2] / ".tmp-leftover.part").write_bytes(b"half")
    site.names = {
        "p": pending,
        "q": spare,
        "d": done,
        "P": pending.upper(),
        "D": done.upper(),
        "df": done[:2],
        # Neither's own fan-out directory: under its own, the spare would be made.
        "of": next(fan for fan in ("00", "11", "22") if fan not in (done[:2], spare[:2])),
        "u": UNREGISTERED,
        "uf": UNREGISTERED[:2],
    }
    yield site
    site.close()


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """A site nothing is ever registered with: for input refused before any file is read."""
    site = Site(tmp_path_factory.mktemp("quiet"))
    yield site
    site.close()


NOT_OURS = "not a fileproc URL: expected <checksum>.<extension>"
NO_RESULT = "no such result"
NOT_ALLOWED = "method not allowed here; use GET or HEAD"

ROUTING = [
    # method, path ({p} pending, {d} done, {u} unregistered, {df} {uf} fan-outs, {of} another), status, text
    pytest.param("GET", "/_fp/0123.jpg", 404, NOT_OURS, id="checksum-too-short"),
    pytest.param("GET", "/_fp/{p}0.jpg", 404, NOT_OURS, id="checksum-one-digit-too-long"),
    pytest.param("GET", "/_fp/" + "a" * 10_000 + ".jpg", 404, NOT_OURS, id="checksum-ten-thousand-digits"),
    pytest.param("GET", "/_fp/{P}.jpg", 404, NOT_OURS, id="checksum-upper-case-hex"),
    pytest.param("GET", "/_fp/0123456789abcdef0123456789abcdeg.jpg", 404, NOT_OURS, id="checksum-not-hex"),
    pytest.param(
        "GET", "/_fp/{u}.jpg", 404, "no instructions registered under {u}", id="checksum-unregistered"
    ),
    pytest.param("GET", "/_fp/..%2f..%2fetc%2fpasswd", 404, NOT_OURS, id="encoded-slash-traversal"),
    pytest.param("GET", "/_fp/%2e%2e/%2e%2e/etc/passwd", 404, NOT_OURS, id="encoded-dot-traversal"),
    pytest.param("GET", "/_fp/%2E%2E%2Ffileproc.db", 404, NOT_OURS, id="encoded-upper-case-traversal"),
    pytest.param("GET", "/_fp//{p}.jpg", 404, NOT_OURS, id="double-slash-before-checksum"),
    pytest.param("GET", "/_fp/{p}.jpg/", 404, NOT_OURS, id="trailing-slash"),
    pytest.param("GET", "/_fp/{p}%00.jpg", 404, NOT_OURS, id="nul-byte"),
    pytest.param("GET", "/_fp/{p}%0a.jpg", 404, NOT_OURS, id="newline"),
    pytest.param("GET", "/_fp/{p};v=1.jpg", 404, NOT_OURS, id="path-parameter"),
    pytest.param("GET", "/_fp/{p}.png", 404, "{p} is registered as .jpg, not .png", id="wrong-extension"),
    pytest.param(
        "GET", "/_fp/{d}.webp", 404, "{d} is registered as .jpg, not .webp", id="wrong-extension-done"
    ),
    pytest.param("GET", "/_fp/{p}.exe", 404, NOT_OURS, id="unknown-extension"),
    pytest.param("GET", "/_fp/{p}.JPG", 404, NOT_OURS, id="upper-case-extension"),
    pytest.param("GET", "/_fp/{p}.jpg.jpg", 404, NOT_OURS, id="double-extension"),
    pytest.param("GET", "/_fp/{p}.", 404, NOT_OURS, id="empty-extension"),
    pytest.param("POST", "/_fp/{p}.jpg", 405, NOT_ALLOWED, id="post"),
    pytest.param("PUT", "/_fp/{p}.jpg", 405, NOT_ALLOWED, id="put"),
    pytest.param("DELETE", "/_fp/{p}.jpg", 405, NOT_ALLOWED, id="delete"),
    pytest.param("PATCH", "/_fp/{p}.jpg", 405, NOT_ALLOWED, id="patch"),
    pytest.param("OPTIONS", "/_fp/{p}.jpg", 405, NOT_ALLOWED, id="options"),
    pytest.param("TRACE", "/_fp/{p}.jpg", 405, NOT_ALLOWED, id="trace"),
    pytest.param("DELETE", "/_fp/files/{df}/{d}.jpg", 405, NOT_ALLOWED, id="files-delete"),
    pytest.param("PUT", "/_fp/files/{df}/{d}.jpg", 405, NOT_ALLOWED, id="files-put"),
    pytest.param(
        "GET", "/_fp/register", 404, "remote registration is off here", id="register-without-secret"
    ),
    pytest.param("GET", "/_fp/files/", 404, NO_RESULT, id="files-root-listing"),
    pytest.param("GET", "/_fp/files/{df}/", 404, NO_RESULT, id="files-fan-out-listing"),
    pytest.param("GET", "/_fp/files/../fileproc.db", 404, NO_RESULT, id="files-traversal"),
    pytest.param("GET", "/_fp/files/%2e%2e/fileproc.db", 404, NO_RESULT, id="files-encoded-dot-traversal"),
    pytest.param(
        "GET", "/_fp/files/{df}/..%2f..%2ffileproc.db", 404, NO_RESULT, id="files-encoded-slash-traversal"
    ),
    pytest.param("GET", "/_fp/files/{df}/.tmp-leftover.part", 404, NO_RESULT, id="files-temporary-file"),
    pytest.param("GET", "/_fp/files/{df}/{d}.jpg.part", 404, NO_RESULT, id="files-part-suffix"),
    pytest.param("GET", "/_fp/files/{uf}/{u}.jpg", 404, NO_RESULT, id="files-unregistered-missing"),
    pytest.param("GET", "/_fp/files/{df}/{d}.png", 404, NO_RESULT, id="files-wrong-extension"),
    pytest.param("GET", "/_fp/files//{df}/{d}.jpg", 404, NO_RESULT, id="files-double-slash"),
    pytest.param("GET", "/_fp/files/{df}/{D}.jpg", 404, NO_RESULT, id="files-upper-case-checksum"),
    pytest.param("GET", "/_fp/files/{of}/{d}.jpg", 404, NO_RESULT, id="files-wrong-fan-out-of-a-done-result"),
    pytest.param("GET", "/_fp/files/{of}/{q}.jpg", 404, NO_RESULT, id="files-wrong-fan-out-starts-no-work"),
]


@pytest.mark.parametrize(("method", "path", "status", "message"), ROUTING)
def test_routing(routed, method, path, status, message):
    before = (_rows(routed), _files(routed))
    response = routed.get(path.format(**routed.names), method=method)
    assert response.status_int == status
    assert message.format(**routed.names) in response.text
    _assert_one_line(response, routed)
    if status == 405:
        assert response.headers["Allow"] == "GET, HEAD"
    assert (_rows(routed), _files(routed)) == before, "a refused request writes nothing and starts no work"


# =========================================================================== instruction text

INSTRUCTION_ERRORS = [
    # text, line, column, step, problem (complements tests/test_instructions.py)
    pytest.param("a.jpg | fit 4\x00x4", 1, 13, "fit", "got '4\\x00x4'", id="nul-byte-in-a-size"),
    pytest.param("a.jpg\nfit 400x300x2", 2, 5, "fit", "expected a size like", id="size-with-three-sides"),
    pytest.param("a.jpg | fit -4x4", 1, 13, "fit", "expected a size like", id="negative-size"),
    pytest.param("a.jpg | fit ４００x３００", 1, 13, "fit", "got '４００x３００'", id="full-width-digits"),
    pytest.param("a.jpg | fit " + "9" * 100_000 + "x", 1, 13, "fit", "width must be from 1", id="huge-width"),
    pytest.param("a.jpg | rotate nan", 1, 16, "rotate", "expected a number of degrees", id="rotate-nan"),
    pytest.param("a.jpg | rotate inf", 1, 16, "rotate", "got 'inf'", id="rotate-infinity"),
    pytest.param(
        "a.jpg | crop 1,2,3,4,5", 1, 14, "crop", "expected a crop like X,Y,W,H", id="crop-five-values"
    ),
    pytest.param(
        "a.jpg | format webp quality=50.5", 1, 29, "format", "whole number", id="fractional-quality"
    ),
    pytest.param("a.jpg | fit 4x4 | format webp quality=", 1, 39, "format", "got ''", id="empty-quality"),
    pytest.param(
        "a.jpg | pad 4x4 color=#1234567", 1, 23, "pad", "expected a colour", id="colour-seven-digits"
    ),
    pytest.param("a.jpg | fill 4x4 gravity=", 1, 26, "fill", "expected gravity to be", id="empty-gravity"),
    pytest.param(
        "a.jpg | fill 4x4 gra-vity=north", 1, 18, "fill", "unknown key 'gra-vity'", id="unknown-dashed-key"
    ),
    pytest.param(
        "a.jpg | rotate 9 color=#fff color=#000", 1, 29, "rotate", "duplicate key", id="duplicate-colour"
    ),
    pytest.param("a.jpg | frame 1:2:3:4", 1, 15, "frame", "expected a frame time", id="frame-four-fields"),
    pytest.param("a.jpg | page +0", 1, 14, "page", "must be from 1", id="page-plus-zero"),
    pytest.param("a.jpg | blur -1", 1, 14, "blur", "greater than 0", id="negative-blur"),
    pytest.param("a.jpg | sharpen 1 2", 1, 19, "sharpen", "too many arguments", id="sharpen-two-amounts"),
    pytest.param(
        "a.jpg\r\nfit 4by4\r\n", 2, 5, "fit", "got '4by4'", id="crlf-column-ignores-carriage-return"
    ),
    pytest.param("a.jpg\n\t\tfit 4by4", 2, 7, "fit", "got '4by4'", id="tabs-count-one-column-each"),
    pytest.param(
        "# c\n\n# c\na.jpg\n\n# x\nupscale\nzoom 2",
        8,
        1,
        "zoom",
        "unknown operation",
        id="line-after-comments",
    ),
    pytest.param("a.jpg | fît 4x4", 1, 9, "fît", "unknown operation 'fît'", id="accented-operation"),
    pytest.param("a.jpg | ｆｉｔ 4x4", 1, 9, "ｆｉｔ", "unknown operation", id="full-width-operation"),
    pytest.param("a.jpg | q=5", 1, 9, "q=5", "unknown operation 'q=5'", id="key-value-as-operation"),
    pytest.param(
        "a.jpg\u2028fit 4x4", 1, 7, "source", "reads as an operation", id="line-separator-is-not-a-newline"
    ),
    pytest.param(
        "a.jpg\x85fit 4x4", 1, 7, "source", "reads as an operation", id="next-line-is-not-a-newline"
    ),
    pytest.param(
        "a.jpg |\x0bfit\x0c4x4 2x2", 1, 17, "fit", "too many arguments", id="vertical-tab-form-feed"
    ),
    pytest.param('"" | fit 4x4', 1, 1, "source", "expected a source reference", id="empty-quoted-source"),
    pytest.param('"   "', 1, 1, "source", "expected a source reference", id="blank-quoted-source"),
]


@pytest.mark.parametrize(("text", "line", "column", "step", "problem"), INSTRUCTION_ERRORS)
def test_instruction_errors(quiet, text, line, column, step, problem):
    with pytest.raises(InstructionError) as parsed:
        parse(text)
    error = parsed.value
    assert (error.line, error.column, error.step) == (line, column, step)
    assert problem in error.problem
    assert "\n" not in str(error)
    with pytest.raises(InstructionError) as registered:
        quiet.registrar.register(text)
    assert str(registered.value) == str(error)
    assert quiet.store.count_by_state() == {}


# Every code point, surrogates included; and text made of the characters that separate
# things: controls, Unicode spaces and line separators that are not newlines here.
_ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
_SEPARATORS = st.sampled_from(
    [chr(code) for code in range(0x20)] + ["\x7f", "\x85", "\xa0", "\u2028", "\u2029", "\u3000", "\ufeff"]
)
_SEPARATED = st.text(st.one_of(_SEPARATORS, st.sampled_from(list("a.jpg |fit4x\"'#=\\"))), max_size=120)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(_ANY_CHARACTER, max_size=120), _SEPARATED))
def test_any_text_parses_or_names_its_position(text):
    try:
        instructions = parse(text)
    except InstructionError as error:
        lines = text.split("\n")
        assert 1 <= error.line <= len(lines)
        assert 1 <= error.column <= len(lines[error.line - 1]) + 1
        return
    canonical = instructions.canonical
    assert parse(canonical).canonical == canonical


# Source references spelled with the pieces canonicalisation tidies (./, //, root: prefixes,
# quotes and the whitespace inside them) rather than after a fixed "a.jpg".
_SOURCE_PIECES = st.lists(
    st.sampled_from(
        ["./", "/", "//", ".", " ", "\t", "\u3000", '"', "'", "\\", ":", "media:", "a", "b.jpg", "#", "="]
    ),
    max_size=16,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_SOURCE_PIECES, st.sampled_from(["", " | fit 4x", "\nformat webp"]))
@example('"./ a.jpg"', "")
@example("./media:./", "")
def test_source_spellings_have_a_canonical_fixed_point(source, steps):
    try:
        instructions = parse(source + steps)
    except InstructionError:
        return
    again = parse(instructions.canonical)
    assert again.canonical == instructions.canonical
    assert again == instructions
    assert again.checksum("v") == instructions.checksum("v")


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(
        ["a.jpg | fit ", "a.jpg | crop ", "", "a.jpg | rotate ", "a.jpg | frame ", '"', "a.jpg | "]
    ),
    st.sampled_from(["9", "1,", "x", "0.", " ", '"', "\\", ":", "%", "|", "=", "fit "]),
    st.integers(10_000, 100_000),
)
def test_very_long_lines_are_answered_quickly(prefix, piece, repeat):
    started = time.perf_counter()
    try:
        parse(prefix + piece * repeat)
    except InstructionError as error:
        assert error.line == 1
    assert time.perf_counter() - started < 1.0


# =========================================================================== sources


@pytest.fixture
def sourced(make_site):
    return make_site(max_source_bytes=50_000)


SOURCES = [
    # text, what is at media/<source>, phase, status, message
    pytest.param("../outside.png", _nothing, "register", 400, "'..' is not allowed", id="dot-dot"),
    pytest.param(
        "photos/../../outside.png", _nothing, "register", 400, "'..' is not allowed", id="dot-dot-inside"
    ),
    pytest.param("..\\outside.png", _nothing, "register", 400, "'..' is not allowed", id="backslash-dot-dot"),
    pytest.param(
        "%2e%2e/outside.png", _nothing, "register", 404, "does not exist", id="percent-encoding-is-literal"
    ),
    pytest.param("/etc/passwd", _nothing, "register", 400, "absolute paths are not allowed", id="absolute"),
    pytest.param(
        "C:\\photos\\a.png", _nothing, "register", 400, "absolute paths", id="absolute-windows-drive"
    ),
    pytest.param("nope:a.png", _nothing, "register", 400, "unknown root 'nope'", id="unknown-root"),
    pytest.param(
        "https://example.com/a.png",
        _nothing,
        "register",
        400,
        "https sources are not enabled",
        id="remote-url",
    ),
    pytest.param(
        "escape.png",
        _symlink(lambda root: str(root / "outside.png")),
        "register",
        400,
        "leads outside its root",
        id="symlink-out-of-root",
    ),
    pytest.param(
        "relative.png",
        _symlink(lambda root: "../outside.png"),
        "register",
        400,
        "leads outside its root",
        id="relative-symlink-out-of-root",
    ),
    pytest.param(
        "zero.png",
        _symlink(lambda root: "/dev/zero"),
        "register",
        400,
        "leads outside its root",
        id="dev-zero-symlink",
    ),
    pytest.param("null.png", _device, "register", 400, "is not a regular file", id="device-file-in-root"),
    pytest.param("pipe.png", _fifo, "register", 400, "is not a regular file", id="fifo-never-opened"),
    pytest.param("folder.png", _directory, "register", 400, "is not a regular file", id="directory"),
    pytest.param("missing.png", _nothing, "register", 404, "'missing.png' does not exist", id="missing"),
    pytest.param(
        "empty.png", _data(b""), "register", 422, "not in a format this server reads", id="empty-file"
    ),
    pytest.param(
        "huge.png",
        _data(b"\x89PNG\r\n\x1a\n" + b"\0" * 60_000),
        "register",
        422,
        "60008 bytes, more than max_source_bytes=50000",
        id="over-max-source-bytes",
    ),
    pytest.param('"a\x00.png"', _nothing, "register", 400, "expected a file path", id="nul-byte"),
    pytest.param("a" * 300 + ".png", _nothing, "register", 400, "File name too long", id="name-too-long"),
    pytest.param('"\ud800.png"', _nothing, "register", 400, "'\\ud800.png'", id="lone-surrogate"),
    pytest.param(
        "cut.jpg",
        _data(lambda: _encoded(halves(400, 300), "JPEG", quality=90)[:1500]),
        "request",
        422,
        "'cut.jpg' is a JPEG image that could not be decoded",
        id="truncated-jpeg",
    ),
    pytest.param(
        "cut.png",
        _data(lambda: _encoded(Image.effect_noise((200, 100), 64), "PNG")[:2000]),
        "request",
        422,
        "'cut.png' is a PNG image that could not be decoded",
        id="truncated-png",
    ),
    pytest.param(
        "alias.png", _symlink(lambda root: "real.png"), "request", 301, "", id="symlink-within-root"
    ),
    pytest.param('"my phôto №1.png" | fit 30x', _image("PNG"), "request", 301, "", id="spaces-and-unicode"),
    pytest.param(
        "gone.png", _nothing, "replaced", 404, "'gone.png' does not exist", id="deleted-after-registering"
    ),
    pytest.param(
        "grown.png",
        _data(b"\x89PNG\r\n\x1a\n" + b"\0" * 60_000),
        "replaced",
        422,
        "more than max_source_bytes=50000",
        id="grown-past-max-source-bytes",
    ),
    pytest.param(
        "emptied.png",
        _data(b""),
        "replaced",
        422,
        "not in a format this server reads",
        id="emptied-after-registering",
    ),
]


@pytest.mark.parametrize(("text", "make", "phase", "status", "message"), SOURCES)
def test_sources(sourced, text, make, phase, status, message):
    (sourced.media / "real.png").write_bytes(_encoded(halves(60, 40), "PNG"))
    _run_source_case(sourced, text, make, phase, status, message)


# =========================================================================== decoders


DECODERS = [
    # text, what is at media/<source>, phase, status, message
    pytest.param(
        "bomb.png",
        _data(_png(100_000, 100_000, data=zlib.compress(b"\0" * 1000))),
        "register",
        422,
        "'bomb.png' has more pixels than this server decodes",
        id="png-declares-ten-gigapixels",
    ),
    pytest.param(
        "large.png | fit 100x",
        _data(_png(9000, 9000, data=zlib.compress(b"\0" * 9001))),
        "register",
        422,
        "9000x9000 = 81000000 pixels, more than max_source_pixels=50000000",
        id="png-over-max-source-pixels-refused-from-its-header",
    ),
    pytest.param(
        "noise.png",
        _data(_png(64, 64, data=b"\x78\x9c" + b"\xff" * 200)),
        "request",
        422,
        "'noise.png' is a PNG image that could not be decoded",
        id="png-corrupt-image-data",
    ),
    pytest.param(
        "broken.png",
        _data(_png(0, 10)),
        "replaced",
        422,
        "'broken.png' is not a readable PNG image",
        id="png-header-broken-after-registering",
    ),
    pytest.param(
        "crc.png", _data(_png(8, 8, crc=False)), "register", 422, "not a readable PNG", id="png-bad-crc"
    ),
    pytest.param("flat.png", _data(_png(0, 10)), "register", 422, "not a readable PNG", id="png-zero-width"),
    pytest.param(
        "odd.png", _data(_png(8, 8, depth=7)), "register", 422, "not a readable PNG", id="png-bit-depth-7"
    ),
    pytest.param(
        "zeros.jpg",
        _data(b"\xff\xd8\xff\xe0" + b"\0" * 200),
        "register",
        422,
        "not a readable JPEG",
        id="jpeg-zeros",
    ),
    pytest.param("sig.gif", _data(b"GIF89a"), "register", 422, "not a readable GIF", id="gif-signature-only"),
    pytest.param(
        "bad.bmp", _data(b"BM" + b"\xff" * 60), "register", 422, "not a readable BMP", id="bmp-bad-header"
    ),
    pytest.param(
        "bad.tiff",
        _data(b"II*\x00\xff\xff\xff\x7f" + b"\0" * 50),
        "register",
        422,
        "not a readable TIFF",
        id="tiff-directory-past-the-end",
    ),
    pytest.param(
        "bad.webp",
        _data(b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 20),
        "register",
        422,
        "not a readable WebP image",
        id="webp-broken-chunk",
    ),
    pytest.param(
        "bad.avif",
        _data(b"\0\0\0\x1cftypavif" + b"\0" * 100),
        "register",
        422,
        "not a readable AVIF",
        id="avif-zeros",
    ),
    pytest.param(
        "bad.pdf",
        _data(b"%PDF-1.4\n" + b"garbage " * 20),
        "register",
        422,
        "is a PDF file that PDFium cannot read",
        id="pdf-garbage",
    ),
    pytest.param(
        "bad.mp4",
        _data(b"\0\0\0\x18ftypisom" + b"\0" * 300),
        "register",
        422,
        "not a readable video",
        id="mp4-zeros",
    ),
    pytest.param(
        "ps.jpg",
        _data(b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
        "register",
        422,
        "'ps.jpg' is a PostScript file",
        id="postscript-named-jpg",
    ),
    pytest.param(
        "svg.png",
        _data(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
        "request",
        301,
        "",
        id="svg-named-png",  # drawn by the SVG engine: the bytes decide, not the name
    ),
    pytest.param(
        "xml.png",
        _data(b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"/>'),
        "register",
        422,
        "'xml.png' is an XML file",
        id="xml-named-png",
    ),
    pytest.param(
        "page.gif",
        _data(b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"),
        "register",
        422,
        "'page.gif' is not in a format this server reads (images, SVG, PDF, office documents, video)",
        id="html-named-gif",
    ),
    pytest.param(
        "eps.png",
        _data(b"\xc5\xd0\xd3\xc6" + b"\0" * 40),
        "register",
        422,
        "is an EPS file",
        id="eps-named-png",
    ),
    pytest.param(
        "list.jpg", _data(b"#EXTM3U\n"), "register", 422, "is an HLS playlist file", id="playlist-named-jpg"
    ),
    pytest.param("doc.png | fit 50x", _image("PDF"), "request", 301, "", id="pdf-named-png-by-its-bytes"),
    pytest.param(
        "frames.gif | fit 50x",
        _data(lambda: _gif(4000, 4000, 20_000)),
        "request",
        422,
        "more than max_animation_pixels=100000000",
        id="gif-twenty-thousand-frames-refused-as-an-animation",
    ),
    pytest.param(
        "frames.gif | fit 50x | format png",
        _data(lambda: _gif(4000, 4000, 20_000)),
        "request",
        301,
        "",
        id="gif-twenty-thousand-frames-first-frame-as-a-still",
    ),
    pytest.param(
        "deep.gif | page 200 | fit 50x",
        _data(lambda: _gif(2000, 2000, 200)),
        "request",
        301,
        "",
        id="gif-page-registered-from-the-header",
    ),
    pytest.param(
        "cmyk.tiff | fit 30x",
        _image("TIFF", lambda: Image.new("CMYK", (60, 40), (0, 255, 255, 0))),
        "request",
        301,
        "",
        id="cmyk-tiff",
    ),
    pytest.param(
        "adobe.jpg | fit 30x",
        _image("JPEG", lambda: Image.new("CMYK", (60, 40), (255, 0, 255, 0))),
        "request",
        301,
        "",
        id="cmyk-jpeg",
    ),
    pytest.param(
        "deep.png | fit 30x", _data(lambda: _png_rgb16(60, 40)), "request", 301, "", id="rgb-16-bit-png"
    ),
    pytest.param(
        "grey16.tiff | fit 30x",
        _image("TIFF", lambda: Image.linear_gradient("L").resize((60, 40)).convert("I;16")),
        "request",
        301,
        "",
        id="grey-16-bit-tiff",
    ),
    pytest.param(
        "la.png | fit 30x",
        _image("PNG", lambda: halves(60, 40).convert("LA")),
        "request",
        301,
        "",
        id="grey-alpha",
    ),
    pytest.param(
        "bits.png | fit 30x",
        _image("PNG", lambda: halves(60, 40).convert("1")),
        "request",
        301,
        "",
        id="one-bit",
    ),
    pytest.param(
        "palette.gif | fit 30x",
        _image("GIF", lambda: halves(60, 40).convert("P"), transparency=0),
        "request",
        301,
        "",
        id="palette-gif-transparency",
    ),
    pytest.param(
        "palette.png | fit 30x",
        _image("PNG", lambda: halves(60, 40).convert("P")),
        "request",
        301,
        "",
        id="palette-png",
    ),
    pytest.param(
        "rgba.bmp | fit 30x",
        _image("BMP", lambda: halves(60, 40, mode="RGBA")),
        "request",
        301,
        "",
        id="rgba-bmp",
    ),
]


@pytest.mark.parametrize(("text", "make", "phase", "status", "message"), DECODERS)
def test_decoders(site, text, make, phase, status, message):
    _run_source_case(site, text, make, phase, status, message)


_FRAME_BOMB = """
import json, sys, warnings
warnings.simplefilter("ignore")
from webob import Request
from fileproc_wsgi import Config, FileProcessor, Registrar
from fileproc_wsgi.errors import FileProcError
config = Config.from_env()
try:
    url = Registrar(config).register(sys.argv[1]).url
except FileProcError as error:
    print(json.dumps({"phase": "register", "status": error.status, "message": str(error)}))
else:
    response = Request.blank(url).get_response(FileProcessor(None, config))
    print(json.dumps({"phase": "request", "status": response.status_int, "message": response.text}))
"""


def test_a_gif_frame_bomb_is_refused_without_walking_its_frames(tmp_path):
    # A 460 kB file: reaching its frame 5000 decodes 5000 canvases of 16 megapixels
    # (hours). Run apart, so that walking them fails this test instead of hanging the suite.
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "bomb.gif").write_bytes(_gif(4000, 4000, 20_000))
    env = {
        **os.environ,
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}",
        "FILEPROC_STORAGE": str(tmp_path / "results"),
        "FILEPROC_SOURCE_ROOTS": f"default={tmp_path / 'media'}",
    }
    command = [sys.executable, "-c", _FRAME_BOMB, "bomb.gif | page 5000 | fit 50x"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("page 5000 of a GIF frame bomb was still being decoded after 15 s")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == 422
    assert "frames" in answer["message"] and "\n" not in answer["message"].rstrip("\n")
    assert not any(path.is_file() for path in (tmp_path / "results").rglob("*")), "no result, no temporary"


# =========================================================================== the register endpoint


@pytest.fixture
def endpoint(make_site):
    site = make_site(secret=SECRET, max_register_bytes=64 * 1024)
    write(site.media, "photo.jpg", halves(80, 60))
    return site


def _texts(*texts: str) -> bytes:
    return json.dumps({"texts": list(texts)}).encode()


GOOD = _texts("photo.jpg | fit 10x")


def _padded(size: int) -> bytes:
    """A valid body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    return GOOD + b" " * (size - len(GOOD))


REGISTER = [
    # body, how it is sent, status, message, rows registered
    pytest.param(GOOD, {"content_type": "text/plain"}, 200, '"width":10', 1, id="json-sent-as-text-plain"),
    pytest.param(GOOD, {"content_type": None}, 200, '"width":10', 1, id="json-without-content-type"),
    pytest.param(
        b"texts=photo.jpg",
        {"content_type": "application/x-www-form-urlencoded", "unsigned": True},
        401,
        "missing X-Fileproc-Timestamp",
        0,
        id="unsigned-form-post",
    ),
    pytest.param(
        b"texts=photo.jpg",
        {"content_type": "application/x-www-form-urlencoded"},
        400,
        "the body is not JSON",
        0,
        id="signed-form-post",
    ),
    pytest.param(
        GOOD, {"signed_body": _texts("other.jpg")}, 401, "bad signature", 0, id="signature-of-another-body"
    ),
    pytest.param(
        GOOD, {"signed_stamp": "{recent}"}, 401, "bad signature", 0, id="signature-moved-to-a-new-timestamp"
    ),
    pytest.param(GOOD, {"signature": "{good:.32}"}, 401, "bad signature", 0, id="signature-truncated"),
    pytest.param(GOOD, {"signature": "é" * 64}, 401, "bad signature", 0, id="signature-not-ascii"),
    pytest.param(GOOD, {"signature": "{good_upper}"}, 200, '"width":10', 1, id="signature-in-upper-case-hex"),
    pytest.param(
        GOOD, {"stamp": " {now}"}, 401, "whole seconds since the epoch", 0, id="timestamp-leading-space"
    ),
    pytest.param(
        GOOD, {"stamp": "+{now}"}, 401, "whole seconds since the epoch", 0, id="timestamp-plus-sign"
    ),
    pytest.param(
        GOOD, {"stamp": "-{now}"}, 401, "whole seconds since the epoch", 0, id="timestamp-minus-sign"
    ),
    pytest.param(
        GOOD, {"stamp": "{now}.5"}, 401, "whole seconds since the epoch", 0, id="timestamp-fraction"
    ),
    pytest.param(
        GOOD, {"stamp": "000{now}"}, 401, "whole seconds since the epoch", 0, id="timestamp-zero-padded"
    ),
    pytest.param(
        GOOD, {"stamp": "¹²³"}, 401, "whole seconds since the epoch", 0, id="timestamp-superscript-digits"
    ),
    pytest.param(GOOD, {"stamp": "{past}"}, 401, "stale timestamp", 0, id="replay-just-past-the-window"),
    pytest.param(
        GOOD, {"stamp": "{recent}"}, 200, '"width":10', 1, id="replay-inside-the-window-is-harmless"
    ),
    pytest.param(b"", {}, 400, "the body is not JSON", 0, id="empty-body"),
    pytest.param(b'{"texts": ["\xff"]}', {}, 400, "the body is not JSON", 0, id="invalid-utf-8"),
    pytest.param(
        b"[" * 30_000 + b"]" * 30_000, {}, 400, "the body is not JSON", 0, id="json-nested-too-deep"
    ),
    pytest.param(b'{"texts": [' + b"9" * 5000 + b"]}", {}, 400, "the body is not JSON", 0, id="huge-integer"),
    pytest.param(
        _texts(*["a"] * 12_000),
        {},
        400,
        "expected between 1 and 1000 texts, got 12000",
        0,
        id="huge-text-count",
    ),
    pytest.param(_texts("\ud800.jpg"), {}, 200, '"type":"SourceError"', 0, id="text-with-a-lone-surrogate"),
    pytest.param(_padded(64 * 1024), {}, 200, '"width":10', 1, id="body-exactly-at-the-cap"),
    pytest.param(
        _padded(64 * 1024 + 1), {}, 413, "over max_register_bytes (65536 bytes)", 0, id="one-byte-over"
    ),
]


def _post(site, body: bytes, *, content_type="application/json", **how):
    now = int(time.time())
    values = {"now": now, "past": now - 310, "recent": now - 290}
    stamp = how.get("stamp", "{now}").format(**values)
    good = sign(SECRET, how.get("signed_stamp", stamp).format(**values), how.get("signed_body", body))
    request = Request.blank("/_fp/register", method="POST", body=body)
    if content_type is None:
        request.environ.pop("CONTENT_TYPE", None)
    else:
        request.content_type = content_type
    if not how.get("unsigned"):
        request.headers[TIMESTAMP_HEADER] = stamp
        request.headers[SIGNATURE_HEADER] = how.get("signature", "{good}").format(
            good=good, good_upper=good.upper()
        )
    response = request.get_response(site.app)
    response.body  # noqa: B018 - read it all, as a server would
    return response


@pytest.mark.parametrize(("body", "how", "status", "message", "registered"), REGISTER)
def test_register_endpoint(endpoint, body, how, status, message, registered):
    response = _post(endpoint, body, **how)
    assert response.status_int == status, response.text
    assert message in response.text
    assert response.headers["Cache-Control"] == "no-store"
    if status >= 400:
        _assert_one_line(response, endpoint)
    assert sum(endpoint.store.count_by_state().values()) == registered
    assert _files(endpoint) == [], "registering makes no result"


# =========================================================================== concurrency


class _Clock:
    """A store clock the test moves: leases and retry times pass without sleeping."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _clocked(make_site, clock: _Clock, **settings):
    """A site (in the test's directory: sites made here share database, sources and
    results, like hosts of one installation) whose store reads ``clock``."""
    site = make_site(**settings)
    site.close()
    site.store = InstructionStore(site.config.database_url, clock=clock)
    site.registrar = Registrar(site.config, store=site.store)
    site.app = FileProcessor(None, site.config, store=site.store)
    return site


def _herd(requests: list[Callable[[], object]]) -> list[tuple[int, str | None, str]]:
    """Fire ``requests`` from one thread each, all at once; their (status, location, text)."""
    barrier = threading.Barrier(len(requests))
    answers: list = []

    def ask(request):
        barrier.wait(timeout=30)
        response = request()
        answers.append((response.status_int, response.location, response.text))

    threads = [threading.Thread(target=ask, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return answers


def _one_result(site, checksum: str, *, attempts: int) -> None:
    job = site.store.get(checksum)
    assert (job.state, job.attempts, job.token) == ("done", attempts, attempts)
    assert _files(site) == [job.result_key], "one complete result, no temporary left"
    assert decode((site.root / "results" / job.result_key).read_bytes()).size == (job.width, job.height)


def _herd_on_one_host(make_site, database_url):
    site = make_site(database_url=database_url)
    write(site.media, "photo.jpg", halves(600, 400))
    url = site.registrar.register("photo.jpg | fill 123x77").url
    answers = _herd([lambda: site.get(url)] * 30)
    assert len(answers) == 30 and {answer[:2] for answer in answers} == {(301, answers[0][1])}
    _one_result(site, _checksum_of(url), attempts=1)


def _herd_split_over_two_hosts(make_site, database_url):
    first, second = make_site(database_url=database_url), make_site(database_url=database_url)
    write(first.media, "photo.jpg", halves(600, 400))
    url = first.registrar.register("photo.jpg | fill 99x55").url
    answers = _herd([lambda: first.get(url), lambda: second.get(url)] * 15)
    assert len(answers) == 30 and {answer[:2] for answer in answers} == {(301, answers[0][1])}
    _one_result(first, _checksum_of(url), attempts=1)


def _herd_on_a_missing_source(make_site, database_url):
    site = make_site(database_url=database_url)
    write(site.media, "photo.jpg", halves(60, 40))
    url = site.registrar.register("photo.jpg | fit 10x").url
    (site.media / "photo.jpg").unlink()
    answers = _herd([lambda: site.get(url)] * 30)
    assert set(answers) == {(404, None, "source 'photo.jpg' does not exist\n")}
    job = site.store.get(_checksum_of(url))
    assert (job.state, job.attempts, job.failure_status) == ("failed", 1, 404), (
        "recorded once, not per request"
    )
    assert _files(site) == []


def _expired_lease_cannot_give_a_verdict(make_site, database_url):
    site = make_site(database_url=database_url)
    write(site.media, "photo.jpg", halves(60, 40))
    checksum = site.registrar.register("photo.jpg | fit 10x").checksum
    late = site.store.claim(checksum, lease=0.05)
    time.sleep(0.1)
    current = site.store.claim(checksum, lease=60)
    assert (late, current) == (1, 2)
    result = {"content_type": "image/jpeg", "width": 10, "height": 7, "result_bytes": 1}
    for verdict in (
        lambda: site.store.complete(checksum, late, result_key="late.jpg", **result),
        lambda: site.store.fail(checksum, late, "late", retry_at=None),
        lambda: site.store.release(checksum, late),
    ):
        with pytest.raises(LeaseLostError, match=f"token {late}"):
            verdict()
    site.store.complete(checksum, current, result_key="current.jpg", **result)
    job = site.store.get(checksum)
    assert (job.state, job.token, job.attempts, job.result_key) == ("done", 2, 2, "current.jpg")


def _two_hosts_complete_the_same_job(make_site, database_url):
    # Host A outlives its lease while making the result; host B claims the job meanwhile
    # and finishes first. A's late verdict must not land, and both answer the same 301.
    clock = _Clock()
    slow = _clocked(make_site, clock, database_url=database_url)
    quick = _clocked(make_site, clock, database_url=database_url)
    write(slow.media, "photo.jpg", halves(600, 400))
    url = slow.registrar.register("photo.jpg | fit 100x").url
    make, overtaken = slow.app.processor.make, []

    def outlived(job, **options):
        result = make(job, **options)
        clock.advance(slow.config.lease_seconds + 1)
        overtaken.append(quick.get(url))
        return result

    slow.app.processor.make = outlived
    late = slow.get(url)
    assert overtaken[0].status_int == 301
    assert (late.status_int, late.location) == (301, overtaken[0].location)
    _one_result(slow, _checksum_of(url), attempts=2)


def _dead_worker_lease_expires(make_site, database_url):
    site = make_site(database_url=database_url, wait_timeout=5)
    write(site.media, "photo.jpg", halves(60, 40))
    representation = site.registrar.register("photo.jpg | fit 10x")
    assert site.store.claim(representation.checksum, lease=0.3) == 1  # a worker that then died
    started = time.monotonic()
    response = site.get(representation.url)
    assert 0.2 < time.monotonic() - started < 3, "waited for the lease, not for wait_timeout"
    assert response.status_int == 301
    _one_result(site, representation.checksum, attempts=2)


def _held_past_wait_timeout(make_site, database_url):
    site = make_site(database_url=database_url, wait_timeout=0.2)
    write(site.media, "photo.jpg", halves(60, 40))
    representation = site.registrar.register("photo.jpg | fit 10x")
    assert site.store.claim(representation.checksum, lease=60) == 1
    response = site.get(representation.url)
    assert response.status_int == 503
    assert response.text == "the result is still being made; ask again shortly\n"
    assert response.headers["Retry-After"] == str(site.config.retry_after)
    _assert_one_line(response, site)
    job = site.store.get(representation.checksum)
    assert (job.state, job.token, job.attempts) == ("working", 1, 1), "the holder keeps its claim"
    assert _files(site) == []


_KILLED_WORKER = """
import os, signal, sys, warnings
warnings.simplefilter("ignore")
from webob import Request
from fileproc_wsgi import Config, FileProcessor
# Killed with the result half stored: written to its temporary file, not yet renamed.
os.fsync = lambda descriptor: os.kill(os.getpid(), signal.SIGKILL)
Request.blank(sys.argv[1]).get_response(FileProcessor(None, Config.from_env()))
"""


def _worker_killed_mid_write(make_site, database_url):
    clock = _Clock()
    site = _clocked(make_site, clock, database_url=database_url, wait_timeout=0.2)
    write(site.media, "photo.jpg", halves(600, 400))
    representation = site.registrar.register("photo.jpg | fit 100x")
    env = {
        **os.environ,
        "FILEPROC_DATABASE_URL": site.config.database_url,
        "FILEPROC_STORAGE": site.config.storage,
        "FILEPROC_SOURCE_ROOTS": f"default={site.media}",
    }
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER, representation.url], env=env, timeout=60, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    assert site.store.get(representation.checksum).state == "working"
    assert len(_partial(site)) == 1 and len(_files(site)) == 1, "only its temporary file, never a torn result"
    waiting = site.get(representation.url)
    assert (waiting.status_int, waiting.headers["Retry-After"]) == (503, str(site.config.retry_after))
    clock.now = time.time() + site.config.lease_seconds + 1  # the killed worker's lease lapses
    assert site.get(representation.url).status_int == 301
    job = site.store.get(representation.checksum)
    assert (job.state, job.attempts, job.token) == ("done", 2, 2)
    made = [name for name in _files(site) if name not in _partial(site)]
    assert made == [job.result_key]
    assert decode((site.root / "results" / job.result_key).read_bytes()).size == (100, 67)


CONCURRENCY = [
    pytest.param(_herd_on_one_host, id="herd-of-30-threads-one-host"),
    pytest.param(_herd_split_over_two_hosts, id="herd-split-over-two-hosts"),
    pytest.param(_herd_on_a_missing_source, id="herd-on-a-missing-source-fails-once"),
    pytest.param(_expired_lease_cannot_give_a_verdict, id="expired-lease-cannot-complete-fail-or-release"),
    pytest.param(_two_hosts_complete_the_same_job, id="two-hosts-complete-the-same-job"),
    pytest.param(_dead_worker_lease_expires, id="dead-worker-recovered-when-its-lease-expires"),
    pytest.param(_held_past_wait_timeout, id="held-elsewhere-past-wait-timeout-is-503"),
    pytest.param(_worker_killed_mid_write, id="worker-killed-with-sigkill-mid-write"),
]


@pytest.mark.parametrize("scenario", CONCURRENCY)
def test_concurrency(scenario, make_site, database_url):
    scenario(make_site, database_url)


# =========================================================================== outages


class _SmallDisk:
    """The results directory on a filesystem of its own: a tmpfs of a few kilobytes that
    can be full or read-only. Where mounting is not permitted (an unprivileged container)
    the faults are simulated: the storage's writes fail with the errno the filesystem
    would give, ENOSPC or EROFS, and ``simulated`` says so."""

    def __init__(self, path, monkeypatch):
        self.path = path
        self.monkeypatch = monkeypatch
        path.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        self.simulated = mounted.returncode != 0

    def _remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)

    def _fail_writes(self, code: int) -> None:
        def failing(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        self.monkeypatch.setattr(os, "fsync", failing)

    def make_full(self) -> None:
        if self.simulated:
            self._fail_writes(errno.ENOSPC)
        # Otherwise already: 64 kB, and the result is larger.

    def make_read_only(self) -> None:
        self._fail_writes(errno.EROFS) if self.simulated else self._remount("ro")

    def mend(self) -> None:
        if self.simulated:
            self.monkeypatch.undo()
        else:
            self._remount("rw,size=8m")

    def unmount(self) -> None:
        if not self.simulated:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disk = _SmallDisk(tmp_path / "results", monkeypatch)
    yield disk
    disk.unmount()


@dataclasses.dataclass
class _Outage:
    site: object
    url: str
    mend: Callable[[], None]


def _noise(site) -> str:
    # Noise does not compress: its PNG result (~120 kB) cannot fit the 64 kB disk.
    write(site.media, "noise.png", Image.effect_noise((200, 200), 100).convert("RGB"))
    return site.registrar.register("noise.png").url


def _postgres_stopped(request, make_site, clock):
    server = request.getfixturevalue("own_postgres")
    site = _clocked(make_site, clock, database_url=server.database())
    url = _noise(site)
    server.stop()
    return _Outage(site, url, server.start)


def _postgres_stopped_before_complete(request, make_site, clock):
    server = request.getfixturevalue("own_postgres")
    site = _clocked(make_site, clock, database_url=server.database())
    url = _noise(site)
    make = site.app.processor.make

    def made_then_outage(job, **options):
        result = make(job, **options)
        server.stop()
        return result

    site.app.processor.make = made_then_outage

    def mend():
        site.app.processor.make = make
        server.start()
        clock.advance(site.config.lease_seconds + 1)  # the claim made before the outage lapses

    return _Outage(site, url, mend)


def _storage_read_only(request, make_site, clock):
    disk = request.getfixturevalue("small_disk")
    site = _clocked(make_site, clock)
    url = _noise(site)
    disk.make_read_only()

    def mend():
        disk.mend()
        clock.advance(31)  # past the first retry time

    return _Outage(site, url, mend)


def _storage_full(request, make_site, clock):
    disk = request.getfixturevalue("small_disk")
    site = _clocked(make_site, clock)
    url = _noise(site)
    disk.make_full()

    def mend():
        disk.mend()
        clock.advance(31)

    return _Outage(site, url, mend)


def _fan_out_is_a_file(request, make_site, clock):
    site = _clocked(make_site, clock)
    url = _noise(site)
    fan_out = site.root / "results" / _checksum_of(url)[:2]
    fan_out.parent.mkdir()
    fan_out.write_text("a file where a directory of results should be")

    def mend():
        fan_out.unlink()
        clock.advance(31)

    return _Outage(site, url, mend)


OUTAGES = [
    # how the dependency fails (and is mended), what the 503 says
    pytest.param(
        _postgres_stopped,
        "database unavailable: ",
        id="postgresql-stopped-then-restarted",
        marks=pytest.mark.integration,
    ),
    pytest.param(
        _postgres_stopped_before_complete,
        "database unavailable: ",
        id="postgresql-stopped-before-complete",
        marks=pytest.mark.integration,
    ),
    pytest.param(
        _storage_read_only,
        "result storage unavailable: cannot write (Read-only file system)",
        id="storage-read-only",
    ),
    pytest.param(
        _storage_full,
        "result storage unavailable: cannot write (No space left on device)",
        id="storage-disk-full",
    ),
    pytest.param(
        _fan_out_is_a_file,
        "result storage unavailable: cannot write",
        id="storage-fan-out-directory-is-a-file",
    ),
]


@pytest.mark.parametrize(("scenario", "message"), OUTAGES)
def test_outages(scenario, message, request, make_site):
    clock = _Clock()
    outage = scenario(request, make_site, clock)
    site = outage.site
    for _ in range(2):  # the first request meets the outage, the second its aftermath
        response = site.get(outage.url)
        assert response.status_int == 503, response.text
        assert message in response.text
        assert int(response.headers["Retry-After"]) >= 1
        _assert_one_line(response, site)
        assert _partial(site) == [], "no half-written file"
    outage.mend()
    response = site.get(outage.url)
    assert response.status_int == 301, "recovered without restarting the application"
    job = site.store.get(_checksum_of(outage.url))
    assert job.state == "done"
    assert _files(site) == [job.result_key], "one complete result, no temporary left"
    assert decode(site.get(response.location).body).size == (200, 200)


# =========================================================================== refused after registering
#
# SPEC section 5 answers a registered URL whose processing failed for good with 404 or 422.
# A source that turned into something refused after it was registered (a FIFO, a symlink out
# of its root, a directory, a device) is 422: a bad reference is 400 at registration, but a
# GET of a registered URL is not a bad request, its source just cannot be processed.

SOURCES_REFUSED_AFTER_REGISTERING = [
    pytest.param("pipe.png", _fifo, "replaced", 422, "is not a regular file", id="replaced-by-a-fifo"),
    pytest.param(
        "folder.png", _directory, "replaced", 422, "is not a regular file", id="replaced-by-a-directory"
    ),
    pytest.param("null.png", _device, "replaced", 422, "is not a regular file", id="replaced-by-a-device"),
    pytest.param(
        "escape.png",
        _symlink(lambda root: str(root / "outside.png")),
        "replaced",
        422,
        "leads outside its root",
        id="replaced-by-a-symlink-out-of-root",
    ),
]


@pytest.mark.parametrize(("text", "make", "phase", "status", "message"), SOURCES_REFUSED_AFTER_REGISTERING)
def test_sources_refused_after_registering(site, text, make, phase, status, message):
    _run_source_case(site, text, make, phase, status, message)
