"""SVG sources: sized from the root element at registration, rendered by LunaSVG at the
size the steps need, and harmless whatever the drawing asks for.

The hostile drawings point at a listener on 127.0.0.1 that records every connection, and
at a green PNG on this machine: a result must never contain green, and the listener must
never be called.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from fileproc_wsgi import engines
from fileproc_wsgi.engines import svg as svg_engine
from fileproc_wsgi.errors import FileProcError, LimitError, ProcessingError
from support import BLUE, GREEN, RED, close_to, colour_at, first_request

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
# 400x200: the left half red, the right half blue.
HALVES = (
    f'<svg {NS} width="400" height="200">'
    '<rect width="200" height="200" fill="red"/><rect x="200" width="200" height="200" fill="blue"/></svg>'
)
# 400x200: a red left half, and nothing on the right.
HALF = f'<svg {NS} width="400" height="200"><rect width="200" height="200" fill="#f00"/></svg>'
CLEAR = (0, 0, 0, 0)


def test_the_engine_is_available():
    # Installed with the test extra: a missing renderer must fail here, not skip.
    assert engines.available()["svg"] is True


@pytest.mark.parametrize(
    ("svg", "steps", "size", "content_type", "colours"),
    [
        pytest.param(HALVES, "fit 200x", (200, 100), "image/png", [(0.25, RED), (0.75, BLUE)], id="fit-200"),
        pytest.param(HALVES, "", (400, 200), "image/png", [(0.25, RED), (0.75, BLUE)], id="natural-size"),
        pytest.param(HALVES, "fit 123x", (123, 62), "image/png", [(0.2, RED), (0.8, BLUE)], id="odd-size"),
        pytest.param(HALVES, "fill 50x50", (50, 50), "image/png", [(0.1, RED), (0.9, BLUE)], id="fill"),
        pytest.param(
            HALVES, "flip horizontal | fit 100x", (100, 50), "image/png", [(0.2, BLUE), (0.8, RED)], id="flip"
        ),
        pytest.param(
            HALVES, "fit 100x | format jpeg", (100, 50), "image/jpeg", [(0.25, RED), (0.75, BLUE)], id="jpeg"
        ),
        pytest.param(HALF, "fit 200x", (200, 100), "image/png", [(0.25, RED + (255,)), (0.75, CLEAR)],
                     id="alpha"),
        pytest.param(
            HALF, "fit 200x | format webp", (200, 100), "image/webp", [(0.25, RED + (255,)), (0.75, CLEAR)],
            id="alpha-webp",
        ),
        pytest.param(
            HALF, "fit 200x | format jpeg", (200, 100), "image/jpeg", [(0.25, RED), (0.75, (255, 255, 255))],
            id="jpeg-flattens-on-white",
        ),
    ],
)  # fmt: skip
def test_drawings_come_out_at_the_promised_size(site, svg, steps, size, content_type, colours):
    (site.media / "a.svg").write_text(svg)
    representation, image = site.make(f"a.svg | {steps}" if steps else "a.svg")
    assert (representation.width, representation.height) == size
    assert image.size == size
    assert representation.content_type == content_type
    for x, colour in colours:
        assert close_to(colour_at(image, x, 0.5), colour), (x, colour_at(image, x, 0.5))


@pytest.mark.parametrize(
    ("root", "size"),
    [
        pytest.param('width="100" height="50"', (100, 50), id="unitless"),
        pytest.param('width="100px" height="50.4px"', (100, 50), id="px"),
        pytest.param('width="1in" height="2.54cm"', (96, 96), id="in-cm"),
        pytest.param('width="72pt" height="6pc"', (96, 96), id="pt-pc"),
        pytest.param('width="25.4mm" height="10"', (96, 10), id="mm"),
        pytest.param('width="2em" height="2ex"', (24, 12), id="em-ex-at-lunasvg-12px"),
        pytest.param('width="1.5em" height="3ex" font-size="20"', (30, 30), id="em-ex-of-root-font-size"),
        pytest.param('width="2em" height="2ex" font-size="150%"', (36, 18), id="font-size-percent"),
        pytest.param('width="2em" height="1em" font-size="2em"', (48, 24), id="font-size-in-em"),
        pytest.param('width="2em" height="1em" font-size="12pt"', (32, 16), id="font-size-in-pt"),
        pytest.param(
            'width="2em" height="1em" font-size="20" style="font-size: 10px"', (20, 10), id="style-wins"
        ),
        pytest.param(
            'width="2em" height="1em" style="font-size:20px !important"', (24, 12), id="important-ignored"
        ),
        pytest.param('width="2em" height="1em" font-size="large"', (24, 12), id="keyword-ignored"),
        pytest.param('width="1e1" height=".5e2"', (10, 50), id="exponents"),
        pytest.param('width="10 px" height="10" viewBox="0 0 30 20"', (15, 10), id="space-before-unit"),
        pytest.param('width="10PX" height="10" viewBox="0 0 30 20"', (15, 10), id="unit-case"),
        pytest.param('viewBox="0 0 300 200"', (300, 200), id="viewbox-only"),
        pytest.param('viewBox="0,0,300,200"', (300, 200), id="viewbox-commas"),
        pytest.param('width="100%" height="100%" viewBox="0 0 300 200"', (300, 200), id="percent"),
        pytest.param('width="600" viewBox="0 0 300 200"', (600, 400), id="width-and-viewbox"),
        pytest.param('height="400" viewBox="10 10 300 200"', (600, 400), id="height-and-viewbox"),
        pytest.param('width="abc" height="50" viewBox="0 0 30 20"', (75, 50), id="bad-width-from-viewbox"),
        pytest.param('width="0.2" height="0.2"', (1, 1), id="under-a-pixel"),
        pytest.param('viewBox="0 0 1000000 1000000"', (1000000, 1000000), id="huge-viewbox"),
    ],
)
def test_natural_size_is_read_from_the_root_element(root, size):
    data = f'<?xml version="1.0"?>\n<!-- a comment -->\n<svg {NS} {root}><rect width="1" height="1"/></svg>'
    info = engines.probe(io.BytesIO(data.encode()), "a.svg")
    assert (info.format, info.width, info.height, info.has_alpha) == ("SVG", *size, True)
    # The size promised is the size the renderer draws (an invalid side is drawn 0 wide
    # by LunaSVG and comes from the viewBox here: the drawing is scaled into that).
    from pillow_lunasvg import _lunasvg

    document = _lunasvg.load(data.encode())
    drawn = [round(side) for side in (document.width, document.height)]
    assert [got if got else want for got, want in zip(drawn, size, strict=True)] == list(size) or min(
        size
    ) == 1


@pytest.mark.parametrize(
    "root",
    [
        pytest.param("", id="nothing"),
        pytest.param('width="100"', id="width-only"),
        pytest.param('width="100%" height="100%"', id="percentages-only"),
        pytest.param('width="0" height="10"', id="zero"),
        pytest.param('width="-5" height="10"', id="negative"),
        pytest.param('width="1e400" height="10"', id="infinite"),
        pytest.param('viewBox="0 0 -30 20"', id="negative-viewbox"),
    ],
)
def test_a_drawing_without_a_size_is_refused(root):
    data = f"<svg {NS} {root}/>".encode()
    with pytest.raises(ProcessingError, match=r"^source 'a.svg' is an SVG file without a size: its <svg>"):
        engines.probe(io.BytesIO(data), "a.svg")


@pytest.fixture
def renders(monkeypatch):
    """The (width, height) LunaSVG was asked to render at, in order."""
    from pillow_lunasvg import _lunasvg

    sizes = []
    load = _lunasvg.load

    class Spy:
        def __init__(self, document):
            self.document = document
            self.width, self.height = document.width, document.height

        def render(self, width, height, scale):
            sizes.append((width, height))
            return self.document.render(width, height, scale)

    monkeypatch.setattr(_lunasvg, "load", lambda data: Spy(load(data)))
    return sizes


@pytest.mark.in_process
@pytest.mark.parametrize(
    ("svg", "steps", "rendered", "size"),
    [
        pytest.param(HALVES, "fit 200x", (200, 100), (200, 100), id="fit"),
        pytest.param(HALVES, "fill 50x50", (100, 50), (50, 50), id="fill-covers-the-box"),
        pytest.param(HALVES, "", (400, 200), (400, 200), id="natural"),
        pytest.param(HALVES, "crop 0,0,100,100 | fit 50x", (400, 200), (50, 50), id="crop-first-needs-units"),
        pytest.param(
            f'<svg {NS} viewBox="0 0 1000000 1000000">'
            '<rect width="500000" height="1000000" fill="red"/></svg>',
            "fit 200x",
            (200, 200),
            (200, 200),
            id="huge-viewbox-rendered-small",
        ),
    ],
)
def test_drawings_are_rendered_at_the_size_the_steps_need(site, renders, svg, steps, rendered, size):
    (site.media / "a.svg").write_text(svg)
    representation, image = site.make(f"a.svg | {steps}" if steps else "a.svg")
    assert renders == [rendered]
    assert image.size == (representation.width, representation.height) == size


def test_a_huge_drawing_is_refused_at_registration_without_a_resizing_step(site):
    (site.media / "a.svg").write_text(f'<svg {NS} viewBox="0 0 1000000 1000000"/>')
    with pytest.raises(
        LimitError, match=r"1000000x1000000 (= \d+ )?pixels, more than max_(source|output)_pixels"
    ):
        site.registrar.register("a.svg")


def test_registration_does_not_load_the_renderer(tmp_path):
    # The web process reads the root element with expat; only workers load LunaSVG.
    (tmp_path / "a.svg").write_text(HALVES)
    script = (
        "import sys; from fileproc_wsgi import engines\n"
        f"info = engines.probe(open({str(tmp_path / 'a.svg')!r}, 'rb'), 'a.svg')\n"
        "assert (info.width, info.height) == (400, 200), info\n"
        "assert engines.available()['svg']\n"
        "assert 'pillow_lunasvg' not in sys.modules, 'renderer imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# --------------------------------------------------------------------------- hostile


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 recording the first bytes of every connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1)
                try:
                    seen.append(connection.recv(200) or b"(connected)")
                except OSError:
                    seen.append(b"(connected)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(timeout=5)
    server.close()


def _wrap(body: str) -> str:
    return f'<svg {NS} width="100" height="100">{body}</svg>'


def _hostile(url: str, green: str) -> list:
    """(id, drawing, steps, expected kind, words in the reason)."""
    image = '<image href="{}" width="100" height="100"/>'
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    entity = '<text y="20">&{};</text>'
    return [
        ("image-href-http", _wrap(image.format(f"{url}/x.png")), "made", ""),
        ("image-xlink-http", _wrap(image.format(f"{url}/x.png").replace("href", "xlink:href")), "made", ""),
        ("image-file-url", _wrap(image.format("file:///etc/passwd")), "made", ""),
        ("image-local-path", _wrap(image.format(green)), "made", ""),
        ("image-local-file-url", _wrap(image.format(f"file://{green}")), "made", ""),
        ("image-relative-path", _wrap(image.format("green.png")), "made", ""),
        (
            "css-import-and-url",
            _wrap(f'<style>@import url({url}/a.css); rect {{fill: url({url}/p.svg#g)}}</style>'
                  '<rect width="100" height="100"/>'),
            "made",
            "",
        ),
        ("css-font-face", _wrap(f"<style>@font-face {{font-family: X; src: url({url}/f.ttf)}}</style>"
                                '<text y="50" font-family="X">hi</text>'), "made", ""),
        ("use-http", _wrap(f'<use href="{url}/u.svg#x"/>'), "made", ""),
        ("use-local-file", _wrap(f'<use href="{green}#x"/>'), "made", ""),
        (
            "script-and-handlers",
            _wrap(f'<script>fetch("{url}/s")</script>'
                  f'<rect width="100" height="100" fill="red" onload="fetch(\'{url}/o\')"/>'),
            "made",
            "",
        ),
        (
            "foreign-object",
            _wrap(f'<foreignObject width="100" height="100"><iframe xmlns="http://www.w3.org/1999/xhtml" '
                  f'src="{url}/f"/></foreignObject>'),
            "made",
            "",
        ),
        (
            "huge-blur",
            _wrap('<filter id="f" x="-50%" y="-50%" width="200%" height="200%">'
                  '<feGaussianBlur stdDeviation="100000"/></filter>'
                  '<rect width="100" height="100" fill="red" filter="url(#f)"/>'),
            "made",
            "",
        ),
        (
            "xxe-file",
            '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + _wrap('<text y="20">&x;</text>'),
            "refused at registration",
            "declares entities or attribute defaults in its DOCTYPE",
        ),
        (
            "xxe-http",
            f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{url}/e">]>' + _wrap(entity.format("x")),
            "refused at registration",
            "declares entities or attribute defaults in its DOCTYPE",
        ),
        (
            "parameter-entity-http",
            f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % p SYSTEM "{url}/p.dtd"> %p;]>' + _wrap(""),
            "refused at registration",
            "declares entities or attribute defaults in its DOCTYPE",
        ),
        (
            "external-dtd-entity",
            f'<?xml version="1.0"?><!DOCTYPE svg SYSTEM "{url}/svg.dtd">' + _wrap('<text y="20">&x;</text>'),
            "refused at registration",  # within the first chunk the probe parses
            "uses the entity &x; that it does not define",
        ),
        (
            "billion-laughs",
            f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY l0 "lol">{laughs}]>' + _wrap(entity.format("l9")),
            "refused at registration",
            "declares entities or attribute defaults in its DOCTYPE",
        ),
        (
            "deeply-nested-groups",
            _wrap("<g>" * 10_000 + '<rect width="100" height="100"/>' + "</g>" * 10_000),
            "refused at registration",  # within the first chunk the probe parses
            "nests its elements deeper than 200 levels",
        ),
        (
            "truncated-after-the-root",
            f'<svg {NS} width="100" height="100"><rect width="',
            "refused at request",
            "not well-formed XML (unclosed token",
        ),
        ("truncated-in-the-root", f'<svg {NS} width="100', "refused at registration", "not well-formed XML"),
        ("garbled", "<svg \x01\xff>>><<", "refused at registration", "not well-formed XML"),
    ]  # fmt: skip


@pytest.mark.timeout(120)
def test_hostile_drawings_are_refused_or_drawn_without_reaching_out(site, listener):
    port, seen = listener
    green = site.media / "green.png"
    Image.new("RGB", (20, 20), GREEN).save(green)
    failures = []
    for name, drawing, expected, words in _hostile(f"http://127.0.0.1:{port}", str(green)):
        (site.media / f"{name}.svg").write_bytes(drawing.encode("utf-8", "surrogateescape"))
        started = time.monotonic()
        outcome = first_request(site, f"{name}.svg | fit 50x", fmt="SVG")
        took = time.monotonic() - started
        if outcome.problems or outcome.kind != expected or words not in outcome.reason:
            failures.append(f"{name}: expected {expected} ({words!r}); {outcome.describe()}")
        if took > 10:
            failures.append(f"{name}: took {took:.1f} s")
        if outcome.kind == "made":
            result = site.request(f"{name}.svg | fit 50x")
            image = Image.open(io.BytesIO(result.body)).convert("RGBA")
            if any(close_to(pixel, GREEN + (255,), 60) for _, pixel in image.getcolors(1 << 16)):
                failures.append(f"{name}: the result shows the local PNG")
    time.sleep(0.3)  # a connection made at the last moment still reaches the listener
    assert not seen, f"the listener was called: {seen}"
    assert not failures, "\n".join(failures)


def test_xml_that_is_not_svg_is_refused_by_name(site):
    (site.media / "a.svg").write_text('<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"/>')
    with pytest.raises(
        FileProcError, match=r"^source 'a.svg' is an XML file, which this server does not decode$"
    ):
        site.registrar.register("a.svg | fit 50x")


def test_a_root_that_is_not_svg_after_a_long_prolog_is_refused_by_name():
    data = b'<?xml version="1.0"?><!--' + b"x" * 5000 + b'--><html xmlns="http://www.w3.org/1999/xhtml"/>'
    with pytest.raises(ProcessingError, match=r"has <html> as its root element, not <svg>$"):
        engines.probe(io.BytesIO(data), "a.svg")


def test_svgz_is_refused_by_name(site):
    import gzip

    (site.media / "a.svgz").write_bytes(gzip.compress(HALVES.encode()))
    with pytest.raises(FileProcError, match="'a.svgz' is an SVGZ file, which this server does not decode"):
        site.registrar.register("a.svgz")


def test_a_root_element_too_far_into_the_file_is_refused():
    data = b"<?xml version='1.0'?><!--" + b"x" * svg_engine.PROBE_BYTES + b"-->" + HALVES.encode()
    with pytest.raises(ProcessingError, match=r"whose <svg> element does not start in its first 256 KiB"):
        engines.probe(io.BytesIO(data), "a.svg")


def test_common_editor_output_is_drawn(site):
    # Illustrator's prolog (a comment and a DOCTYPE naming the SVG 1.1 DTD, never fetched),
    # a byte order mark, and xlink:href used without declaring its prefix.
    drawing = (
        '\ufeff<?xml version="1.0" encoding="utf-8"?>\n'
        "<!-- Generator: Adobe Illustrator 24.0.0, SVG Export Plug-In -->\n"
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
        '<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="40px" height="20px" '
        'viewBox="0 0 40 20">'
        '<defs><rect id="r" width="20" height="20" fill="red"/></defs><use xlink:href="#r"/>'
        '<rect x="20" width="20" height="20" fill="blue"/></svg>'
    )
    (site.media / "a.svg").write_text(drawing, encoding="utf-8")
    representation, image = site.make("a.svg | upscale | fit 80x")
    assert image.size == (representation.width, representation.height) == (80, 40)
    assert close_to(colour_at(image, 0.25, 0.5), RED + (255,))
    assert close_to(colour_at(image, 0.75, 0.5), BLUE + (255,))


# --------------------------------------------------------------------------- review fixes

# 40x30: the left half red, the right half blue; a logo-sized drawing.
SMALL = (
    f'<svg {NS} width="40" height="30">'
    '<rect width="20" height="30" fill="red"/><rect x="20" width="20" height="30" fill="blue"/></svg>'
)


def blurred(image: Image.Image) -> int:
    """Pixels of the middle row that are neither the red nor the blue half: a drawing
    drawn at its size has none but the edge's own; one enlarged by resampling, dozens."""
    row = [colour_at(image, (x + 0.5) / image.width, 0.5)[:3] for x in range(image.width)]
    return sum(1 for pixel in row if not (close_to(pixel, RED) or close_to(pixel, BLUE)))


@pytest.mark.in_process
@pytest.mark.parametrize(
    ("steps", "rendered", "size"),
    [
        pytest.param("upscale | fit 600x", (600, 450), (600, 450), id="upscale-fit"),
        pytest.param("upscale | fill 300x300", (400, 300), (300, 300), id="upscale-fill"),
        pytest.param("upscale | pad 600x600", (600, 450), (600, 600), id="upscale-pad"),
        pytest.param("resize 400x300", (400, 300), (400, 300), id="resize-enlarges-anyway"),
        pytest.param("flip horizontal | upscale | fit 600x", (600, 450), (600, 450), id="flip-first"),
        pytest.param("fit 600x", (40, 30), (40, 30), id="no-upscale-no-enlargement"),
    ],
)
def test_an_enlarged_drawing_is_drawn_at_the_size_it_ends_up(site, renders, steps, rendered, size):
    (site.media / "logo.svg").write_text(SMALL)
    representation, image = site.make(f"logo.svg | {steps}")
    assert renders == [rendered]
    assert image.size == (representation.width, representation.height) == size
    assert blurred(image) <= 2


def test_upscale_is_crisp_where_lanczos_would_blur(site):
    (site.media / "logo.svg").write_text(SMALL)
    _, drawn = site.make("logo.svg | upscale | fit 600x")
    enlarged = Image.new("RGB", (40, 30), RED)
    enlarged.paste(BLUE, (20, 0, 40, 30))
    enlarged = enlarged.resize((600, 450), Image.Resampling.LANCZOS)
    # What the old path gave (drawn at 40x30, then resampled): a ten-pixel smear at tolerance 40.
    assert blurred(drawn) <= 2
    assert blurred(enlarged) >= 8


def test_an_enlarged_render_over_the_source_limit_falls_back_to_the_natural_size(make_site):
    site = make_site(isolate_jobs=False, max_source_pixels=100_000)
    # A 1000x10 strip filling 200x200 would be drawn 20000x200 = 4 MP to cover the box:
    # over the limit, it is drawn at its natural size and enlarged by the steps instead.
    (site.media / "strip.svg").write_text(
        f'<svg {NS} width="1000" height="10"><rect width="1000" height="10"/></svg>'
    )
    representation, image = site.make("strip.svg | upscale | fill 200x200")
    assert image.size == (representation.width, representation.height) == (200, 200)
    assert colour_at(image, 0.5, 0.5)[3] == 255


def test_attribute_defaults_from_a_doctype_are_refused(site):
    # Expat would read width 40000 from the DTD; LunaSVG ignores it and draws 10x10.
    drawing = f'<!DOCTYPE svg [<!ATTLIST svg width CDATA "40000">]><svg {NS} viewBox="0 0 10 10"/>'
    (site.media / "a.svg").write_text(drawing)
    with pytest.raises(ProcessingError) as refused:
        site.registrar.register("a.svg")
    assert str(refused.value) == (
        "source 'a.svg' is an SVG file that declares entities or attribute defaults in its DOCTYPE, "
        "which are never read here"
    )


def test_the_size_promised_for_em_is_the_size_drawn(site):
    (site.media / "em.svg").write_text(
        f'<svg {NS} width="2em" height="1em" font-size="20"><rect width="20" height="20" fill="red"/>'
        '<rect x="20" width="20" height="20" fill="blue"/></svg>'
    )
    representation, image = site.make("em.svg")
    assert image.size == (representation.width, representation.height) == (40, 20)
    assert close_to(colour_at(image, 0.25, 0.5), RED + (255,))
    assert close_to(colour_at(image, 0.75, 0.5), BLUE + (255,))
