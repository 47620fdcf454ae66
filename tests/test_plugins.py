"""Plugins, installed for real and found by their entry points (docs/plugins.md).

The example plugin (``examples/fileproc-watermark``) is pip-installed into a directory
of its own, and small plugins this file writes (one that fails to import, one that
takes a built-in step's word, an engine for PPM files) are installed there as pip
lays out a distribution. Each test runs a fresh interpreter with that directory on
``PYTHONPATH``, so discovery is the real one (importlib.metadata) in the web process
and in the worker processes the jobs run in, and no other test sees these plugins.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
from typing import ClassVar

import pytest
from PIL import Image

from fileproc_wsgi.instructions import parse
from fileproc_wsgi.operations import PluginOperation
from support import decode, pip_install_target

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "fileproc-watermark"
RED, BLUE = (220, 20, 60), (0, 0, 255)


def _example(tmp: pathlib.Path, version: str) -> pathlib.Path:
    """The example plugin at ``version``, installed into a directory of its own."""
    source = tmp / f"source-{version}"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    project = source / "pyproject.toml"
    text = project.read_text()
    assert 'version = "0.1.0"' in text
    project.write_text(text.replace('version = "0.1.0"', f'version = "{version}"'))
    target = tmp / f"watermark-{version}"
    pip_install_target(source, target)
    return target


def _distribution(
    target: pathlib.Path, name: str, entry_points: str, module: str, code: str, version: str = "1.0"
) -> pathlib.Path:
    """A distribution laid out as pip installs one: its module and its dist-info."""
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (target / f"{module}.py").write_text(textwrap.dedent(code))
    return target


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> dict[str, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("plugins")
    return {
        "watermark": _example(tmp, "0.1.0"),
        "watermark-0.2.0": _example(tmp, "0.2.0"),
        "broken": _distribution(
            tmp / "broken",
            "fileproc-broken",
            "[fileproc_wsgi.operations]\nbroken = fileproc_broken:Broken\n",
            "fileproc_broken",
            "raise RuntimeError('no licence key found')\n",
        ),
        "shadow": _distribution(
            tmp / "shadow",
            "fileproc-shadow",
            "[fileproc_wsgi.operations]\nfit = fileproc_shadow:Fit\n",
            "fileproc_shadow",
            """
            from fileproc_wsgi.operations import PluginOperation

            class Fit(PluginOperation):
                word = "fit"
                usage = "fit ANYTHING"
                least = most = 1

                @classmethod
                def parse(cls, arguments):
                    return cls()
            """,
        ),
        "broken-engine": _distribution(
            tmp / "broken-engine",
            "fileproc-tga",
            "[fileproc_wsgi.engines]\ntga = fileproc_tga\n",
            "fileproc_tga",
            "import fileproc_tga_native  # a C extension its wheel forgot\n",
        ),
        "lacking-engine": _distribution(
            tmp / "lacking-engine",
            "fileproc-exr",
            "[fileproc_wsgi.engines]\nexr = fileproc_exr\n",
            "fileproc_exr",
            NETPBM.replace('"PPM"', '"EXR"').replace('{"pillow": True}', '{"openexr": False}'),
        ),
        **{
            name: _distribution(
                tmp / name,
                "fileproc-netpbm",
                "[fileproc_wsgi.engines]\nnetpbm = fileproc_netpbm\n",
                "fileproc_netpbm",
                NETPBM,
                version,
            )
            for name, version in (("netpbm", "1.0"), ("netpbm-2", "2.0"))
        },
    }


NETPBM = """
    from PIL import Image

    FORMATS = ("PPM",)

    def sniff(head):
        return "PPM" if head[:2] == b"P6" and head[2:3].isspace() else None

    def available():
        return {"pillow": True}

    def probe(handle, found, reference, instructions, config):
        with Image.open(handle, formats=["PPM"]) as image:
            return image.width, image.height, False

    def decode(handle, found, reference, instructions, config):
        with Image.open(handle, formats=["PPM"]) as image:
            return image.convert("RGB"), None, image.size
    """


def _run(code: str, paths: list[pathlib.Path], *args: str, env: dict | None = None) -> dict:
    """What ``code`` prints as JSON on its last line, run in a fresh interpreter that has
    ``paths`` (installed plugins) on its PYTHONPATH."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(env or {})
    if paths:
        environment["PYTHONPATH"] = os.pathsep.join(map(str, paths))
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=environment,
        cwd=paths[0] if paths else None,
    )
    assert result.returncode == 0, result.stderr
    assert "ResourceWarning" not in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# A page with one block, rendered by Django or Jinja2, then its image requested through
# the middleware like a browser: jobs run in worker processes (isolate_jobs, the default).
SITE = """
import json, pathlib, re, sys

from webob import Request

root, kind, text = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
values = {
    "database_url": f"sqlite:///{root / 'fp.db'}",
    "storage": str(root / "results"),
    "source_roots": {"default": str(root / "media")},
}
checks = []


def site(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not here"]


if kind == "django":
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="tests-only",
        INSTALLED_APPS=["fileproc_django"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        FILEPROCESSOR=values,
    )
    django.setup()
    from django.template import engines

    import fileproc_django
    from fileproc_django import checks as fileproc_checks, conf

    registrar = conf.get_registrar()
    registrar.store.create_tables()
    source = "{% load fileprocessor %}{% fileprocessor %}" + text + "{% endfileprocessor %}"
    page = engines["django"].from_string(source).render()
    app = fileproc_django.wrap(site)
    checks = [[message.id, message.msg, message.hint] for message in fileproc_checks.check_engines()]
else:
    from jinja2 import Environment

    from fileproc_jinja2 import FileProcessorExtension
    from fileproc_wsgi import Config, FileProcessor, Registrar

    registrar = Registrar(Config(**values))
    registrar.store.create_tables()
    environment = Environment(extensions=[FileProcessorExtension])
    environment.fileprocessor_registrar = registrar
    page = environment.from_string("{% fileprocessor %}" + text + "{% endfileprocessor %}").render()
    app = FileProcessor(site, registrar.config, registrar=registrar)

from fileproc_wsgi import pool

found = re.search(r'<img src="([^"]+)" width="(\\d+)" height="(\\d+)"', page)
outcome = {"page": page, "checks": checks}
if found:
    url, width, height = found.groups()
    redirect = Request.blank(url).get_response(app)
    outcome.update(promised=[int(width), int(height)], status=redirect.status_int, body=redirect.text)
    if redirect.status_int == 301:
        result = Request.blank(redirect.location).get_response(app)
        outcome["status"] = result.status_int
        (root / "result").write_bytes(result.body)
outcome["workers"] = sum(pool.shared_pool().size())
registrar.close()
print(json.dumps(outcome))
"""


def _media(tmp_path: pathlib.Path) -> pathlib.Path:
    media = tmp_path / "media"
    media.mkdir()
    Image.new("RGB", (400, 300), BLUE).save(media / "photo.png")
    Image.new("RGB", (200, 100), (0, 160, 0)).save(media / "photo.ppm")
    return tmp_path


def _site(tmp_path, paths, kind: str, text: str, env: dict | None = None) -> tuple[dict, Image.Image | None]:
    outcome = _run(SITE, paths, str(tmp_path), kind, text, env=env)
    result = tmp_path / "result"
    return outcome, (decode(result.read_bytes()) if result.exists() else None)


def _close(actual, expected, tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual[:3], expected, strict=True))


def _mix(top, bottom, opacity: float):
    return tuple(round(t * opacity + b * (1 - opacity)) for t, b in zip(top, bottom, strict=True))


@pytest.mark.parametrize(
    ("kind", "text", "opacity"),
    [
        pytest.param(
            "django",
            "photo.png | fit 200x | watermark logo.png position=south-east scale=0.25",
            1.0,
            id="django",
        ),
        pytest.param(
            "jinja2",
            "photo.png | fit 200x | watermark logo.png position=southeast scale=.25 opacity=0.5",
            0.5,
            id="jinja2",
        ),
    ],
)
def test_a_template_using_the_plugin_gets_the_logo_in_its_corner(installed, tmp_path, kind, text, opacity):
    outcome, image = _site(_media(tmp_path), [installed["watermark"]], kind, text)
    assert outcome["status"] == 200, outcome
    assert outcome["workers"] >= 1, "the job ran in a worker process"
    assert image.size == tuple(outcome["promised"]) == (200, 150)
    pixels = image.convert("RGB")
    # The 48x24 logo at a quarter of the width is 50x25, 3 pixels (2% of 150) from the
    # bottom and right edges: from (147, 122) to (197, 147). Its white dot is on its left.
    assert _close(pixels.getpixel((182, 134)), _mix(RED, BLUE, opacity))
    assert _close(pixels.getpixel((152, 134)), _mix((255, 255, 255), BLUE, opacity))
    for outside in ((10, 10), (140, 134), (182, 118), (199, 149), (182, 149)):
        assert _close(pixels.getpixel(outside), BLUE), outside


def test_the_django_check_and_a_refusal_name_a_plugin_that_failed_to_load(installed, tmp_path):
    paths = [installed["broken"], installed["watermark"]]
    outcome, image = _site(_media(tmp_path), paths, "django", "photo.png | fit 100x")
    assert outcome["status"] == 200 and image.size == (100, 75), "the built-ins work"
    [(check_id, message, hint)] = outcome["checks"]
    assert check_id == "fileproc_django.W024", "step plugins have their own id, not a library's"
    assert "the step plugin 'broken' (fileproc-broken 1.0) could not be loaded" in message
    assert "RuntimeError: no licence key found" in message
    assert "texts using its step are refused" in message
    assert hint == "Fix or uninstall fileproc-broken (pip uninstall fileproc-broken)."
    assert "silence" not in hint and "such sources" not in message

    found = _run(
        """
        import json
        from fileproc_wsgi.instructions import parse
        from fileproc_wsgi.errors import InstructionError

        watermark = parse("a.jpg | fit 100x | watermark logo.png").canonical
        try:
            parse("a.jpg | fit 100x | broken 3")
        except InstructionError as error:
            print(json.dumps({"watermark": watermark, "error": str(error)}))
        """,
        paths,
    )
    assert found["watermark"] == "source a.jpg\nfit 100x\nwatermark logo.png"
    assert found["error"].startswith("line 1, column 20, step 'broken': unknown operation 'broken';")
    assert "or of the installed plugins: watermark;" in found["error"]
    assert found["error"].endswith(
        "the step plugin 'broken' (fileproc-broken 1.0) could not be loaded: "
        "RuntimeError: no licence key found"
    )


# manage.py check's engine check and the log it writes, at the level given.
CHECK = """
import io, json, logging, sys
stream = io.StringIO()
logging.basicConfig(level=getattr(logging, sys.argv[1]), stream=stream, format="%(levelname)s %(message)s")
import django
from django.conf import settings
settings.configure(SECRET_KEY="tests-only", INSTALLED_APPS=["fileproc_django"])
django.setup()
from fileproc_django import checks
found = [[message.id, message.msg, message.hint] for message in checks.check_engines()]
print(json.dumps({"checks": found, "log": stream.getvalue()}))
"""


def test_each_broken_plugin_is_one_check_with_its_own_id_and_one_log_line(installed):
    paths = [installed["broken"], installed["broken-engine"], installed["lacking-engine"]]
    found = _run(CHECK, paths, "WARNING")
    by_id = sorted((check_id, message.split(";")[0], hint) for check_id, message, hint in found["checks"])
    assert by_id == [
        (
            "fileproc_django.W023",
            "the engine plugin 'exr' reports 'openexr' is not available",
            "Install what fileproc-exr needs (see its documentation), or uninstall fileproc-exr.",
        ),
        (
            "fileproc_django.W023",
            "the engine plugin 'tga' (fileproc-tga 1.0) could not be loaded: "
            "ModuleNotFoundError: No module named 'fileproc_tga_native'",
            "Fix or uninstall fileproc-tga (pip uninstall fileproc-tga).",
        ),
        (
            "fileproc_django.W024",
            "the step plugin 'broken' (fileproc-broken 1.0) could not be loaded: "
            "RuntimeError: no licence key found",
            "Fix or uninstall fileproc-broken (pip uninstall fileproc-broken).",
        ),
    ]
    # One warning line for each plugin that failed to load; the traceback only at DEBUG.
    lines = found["log"].splitlines()
    assert [line for line in lines if "could not be loaded" in line] == [
        "WARNING fileproc_wsgi: the step plugin 'broken' (fileproc-broken 1.0) could not be loaded: "
        "RuntimeError: no licence key found",
        "WARNING fileproc_wsgi: the engine plugin 'tga' (fileproc-tga 1.0) could not be loaded: "
        "ModuleNotFoundError: No module named 'fileproc_tga_native'",
    ]
    assert "Traceback" not in found["log"]
    debug = _run(CHECK, paths, "DEBUG")["log"]
    assert debug.count("Traceback (most recent call last)") == 2
    assert "RuntimeError: no licence key found" in debug


def test_an_unknown_step_lists_the_built_ins_and_the_installed_plugins(installed):
    found = _run(
        """
        import json
        from fileproc_wsgi.instructions import parse

        try:
            parse("a.jpg\\nfit 100x\\nwatermak logo.png")
        except ValueError as error:
            print(json.dumps(str(error)))
        """,
        [installed["watermark"]],
    )
    assert found == (
        "line 3, column 1, step 'watermak': unknown operation 'watermak'; expected one of: background, "
        "blur, crop, fill, fit, flip, format, frame, grayscale, pad, page, quality, resize, rotate, "
        "sharpen, upscale; or of the installed plugins: watermark"
    )


def test_a_plugin_taking_a_built_in_word_is_refused_by_name(installed):
    found = _run(
        """
        import json
        from fileproc_wsgi import engines, plugins
        from fileproc_wsgi.instructions import parse

        fit = parse("a.jpg | fit 100x")
        print(json.dumps({
            "type": type(fit.steps[0]).__module__,
            "canonical": fit.canonical,
            "problems": [str(problem) for problem in plugins.problems()],
            "missing": [list(missing) for missing in engines.missing()],
        }))
        """,
        [installed["shadow"]],
    )
    assert found["type"] == "fileproc_wsgi.operations"
    assert found["canonical"] == "source a.jpg\nfit 100x"
    reason = (
        "the step plugin 'fit' (fileproc-shadow 1.0) could not be loaded: "
        "its word 'fit' is a built-in step's, which a plugin cannot replace"
    )
    assert found["problems"] == [reason]
    assert ["plugin:fit", None, reason] in found["missing"]


CHECKSUMS = """
import json, os, pathlib, sys
from fileproc_wsgi.instructions import parse

texts = sys.argv[1:]
sums = [parse(text).checksum("v1") for text in texts]
logo = os.environ.get("FILEPROC_WATERMARK_DIR")
if logo:
    (pathlib.Path(logo) / "logo.png").write_bytes(pathlib.Path(logo, "other.png").read_bytes())
    sums.append(parse(texts[0]).checksum("v1"))
print(json.dumps(sums))
"""


def test_the_checksum_follows_the_plugin_version_and_the_logo_bytes_only_where_used(installed, tmp_path):
    used = "a.jpg | fit 100x | watermark logo.png"
    same = "a.jpg\nFIT 100X\nWaterMark logo.png position=South-East opacity=1.0 scale=0.2000001"
    unused = "a.jpg | fit 100x"
    first = _run(CHECKSUMS, [installed["watermark"]], used, same, unused)
    second = _run(CHECKSUMS, [installed["watermark-0.2.0"]], used, same, unused)
    assert first[0] == first[1], "equivalent texts, one URL"
    assert second[0] != first[0], "a new plugin version gives new URLs"
    assert first[2] == second[2] == parse(unused).checksum("v1"), "texts without the plugin keep theirs"

    logos = tmp_path / "logos"
    logos.mkdir()
    Image.new("RGBA", (10, 10), (0, 0, 0, 255)).save(logos / "logo.png")
    Image.new("RGBA", (12, 10), (0, 0, 0, 255)).save(logos / "other.png")
    site = _run(CHECKSUMS, [installed["watermark"]], used, env={"FILEPROC_WATERMARK_DIR": str(logos)})
    assert len({first[0], *site}) == 3, "a site's logo, and then its new bytes, give new URLs"


def test_an_engine_plugin_reads_a_format_no_built_in_engine_does(installed, tmp_path):
    outcome, image = _site(_media(tmp_path), [installed["netpbm"]], "jinja2", "photo.ppm | fit 100x")
    assert outcome["status"] == 200, outcome
    assert outcome["promised"] == [100, 50]
    assert image.size == (100, 50)
    assert _close(image.convert("RGB").getpixel((50, 25)), (0, 160, 0), 2)

    (tmp_path / "result").unlink()
    outcome, image = _site(tmp_path, [], "jinja2", "photo.ppm | fit 100x")
    assert image is None and "img" not in outcome["page"], "refused without the plugin"


def test_a_new_version_of_an_engine_plugin_gives_its_sources_new_urls(installed, tmp_path):
    _media(tmp_path)
    register = """
        import json, pathlib, sys
        from fileproc_wsgi import Config, Registrar

        root = pathlib.Path(sys.argv[1])
        registrar = Registrar(Config(
            database_url=f"sqlite:///{root / 'fp.db'}",
            storage=str(root / "results"),
            source_roots={"default": str(root / "media")},
        ))
        registrar.store.create_tables()
        print(json.dumps([registrar.register(text).checksum for text in sys.argv[2:]]))
        registrar.close()
        """
    texts = ("photo.ppm | fit 100x", "photo.png | fit 100x")
    first = _run(register, [installed["netpbm"]], str(tmp_path), *texts)
    second = _run(register, [installed["netpbm-2"]], str(tmp_path), *texts)
    assert first[0] != second[0], "the source the plugin reads gets a new URL"
    assert first[1] == second[1], "a source a built-in engine reads keeps its URL"


def _block(markdown: str, language: str) -> str:
    return markdown.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_minimal_plugin_of_the_docs_works_as_written(tmp_path):
    docs = (EXAMPLE.parent.parent / "docs" / "plugins.md").read_text()
    minimal = docs.split("## A minimal step", 1)[1]
    project = tmp_path / "fileproc-invert"
    (project / "src" / "fileproc_invert").mkdir(parents=True)
    (project / "src" / "fileproc_invert" / "__init__.py").write_text(_block(minimal, "python"))
    (project / "pyproject.toml").write_text(_block(minimal, "toml"))
    target = tmp_path / "site"
    pip_install_target(project, target)
    found = _run(
        """
        import json
        from PIL import Image
        from fileproc_wsgi.instructions import parse

        text = parse("a.jpg | fit 400x | INVERT above=0128")
        step = text.steps[-1]
        modes = {}
        colours = {"L": 200, "LA": (200, 90), "RGB": (200, 10, 0), "RGBA": (200, 10, 0, 90)}
        for mode, colour in colours.items():
            image = step.apply(Image.new(mode, (4, 3), colour))
            modes[mode] = [image.mode, list(image.size), image.getpixel((1, 1))]
        print(json.dumps({"canonical": text.canonical, "modes": modes, "plugins": text.plugins}))
        """,
        [target],
    )
    assert found["canonical"] == "source a.jpg\nfit 400x\ninvert above=128"
    assert found["plugins"] == "invert fileproc-invert 1.0.0"
    assert found["modes"] == {
        "L": ["L", [4, 3], 55],
        "LA": ["LA", [4, 3], [55, 90]],
        "RGB": ["RGB", [4, 3], [55, 10, 0]],
        "RGBA": ["RGBA", [4, 3], [55, 10, 0, 90]],
    }


# --------------------------------------------------------------------------- review fixes

# Two steps that add a black border of so many output pixels: ``border`` says how it
# scales for a 2x variant, ``rule`` keeps the default (the step unchanged).
BORDER = """
    import dataclasses
    from typing import ClassVar

    from PIL import ImageOps

    from fileproc_wsgi.operations import PluginOperation


    @dataclasses.dataclass(frozen=True)
    class Rule(PluginOperation):
        word: ClassVar[str] = "rule"
        usage: ClassVar[str] = "rule PIXELS"
        least: ClassVar[int] = 1
        most: ClassVar[int] = 1
        pixels: int

        @classmethod
        def parse(cls, arguments):
            return cls(arguments.integer(0, "pixels", 1, 100))

        def canonical_arguments(self):
            return (str(self.pixels),)

        def size(self, width, height):
            return width + 2 * self.pixels, height + 2 * self.pixels

        def apply(self, image):
            return ImageOps.expand(image, self.pixels, fill="black")


    @dataclasses.dataclass(frozen=True)
    class Border(Rule):
        word: ClassVar[str] = "border"
        usage: ClassVar[str] = "border PIXELS"

        def scaled(self, factor):
            return dataclasses.replace(self, pixels=round(self.pixels * factor))
    """

VARIANTS = """
import json, pathlib, sys

from webob import Request

from fileproc_wsgi import Config, FileProcessor, Registrar
from fileproc_wsgi.block import build

root, text, arguments = pathlib.Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
registrar = Registrar(Config(
    database_url=f"sqlite:///{root / 'fp.db'}",
    storage=str(root / "results"),
    source_roots={"default": str(root / "media")},
))
registrar.store.create_tables()
rendition = build(registrar, text, arguments)
app = FileProcessor(None, registrar.config, registrar=registrar)
variants = []
for index, variant in enumerate(rendition.srcset or (rendition.image,)):
    redirect = Request.blank(variant.url).get_response(app)
    assert redirect.status_int == 301, redirect.text
    (root / f"variant-{index}").write_bytes(Request.blank(redirect.location).get_response(app).body)
    variants.append([variant.width, variant.height])
registrar.close()
print(json.dumps({"html": str(rendition), "densities": rendition.densities, "promised": variants}))
"""


@pytest.fixture(scope="module")
def border(installed, tmp_path_factory) -> pathlib.Path:
    entry_points = "[fileproc_wsgi.operations]\nborder = fileproc_border:Border\nrule = fileproc_border:Rule"
    target = tmp_path_factory.mktemp("border")
    return _distribution(target, "fileproc-border", entry_points, "fileproc_border", BORDER)


def _variants(tmp_path, paths, text: str, arguments: dict) -> tuple[dict, list[Image.Image]]:
    _media(tmp_path)
    outcome = _run(VARIANTS, paths, str(tmp_path), text, json.dumps(arguments))
    count = len(outcome["promised"])
    images = [decode((tmp_path / f"variant-{index}").read_bytes()) for index in range(count)]
    return outcome, images


def _black(pixel) -> bool:
    return max(pixel[:3]) < 40


def test_densities_keep_the_2x_of_a_plugin_step_that_scales_its_pixels(border, tmp_path):
    outcome, images = _variants(tmp_path, [border], "photo.png | fit 160x | border 2", {"densities": "1,2"})
    assert outcome["densities"] == [1.0, 2.0]
    assert " 2x" in outcome["html"]
    assert [image.size for image in images] == [(164, 124), (328, 248)]
    assert outcome["promised"] == [[164, 124], [328, 248]]
    twice = images[1].convert("RGB")
    # The border is 4 pixels wide at 2x: the same picture with more pixels.
    assert _black(twice.getpixel((3, 100))) and _close(twice.getpixel((5, 100)), BLUE)
    assert _black(twice.getpixel((324, 100))) and _close(twice.getpixel((322, 100)), BLUE)


def test_densities_drop_the_2x_of_a_step_adding_fixed_pixels_without_scaled(border, tmp_path):
    # The documented behaviour without scaled(): 'rule 2' at 2x is 324 wide, not 2 x 164,
    # which the block cannot tell from a source too small for 2x.
    outcome, images = _variants(tmp_path, [border], "photo.png | fit 160x | rule 2", {"densities": "1,2"})
    assert outcome["densities"] == []
    assert "srcset" not in outcome["html"]
    assert [image.size for image in images] == [(164, 124)]


def test_densities_keep_a_relative_plugin_step_as_written(installed, tmp_path):
    text = "photo.png | fit 200x | watermark logo.png scale=0.25"
    outcome, images = _variants(tmp_path, [installed["watermark"]], text, {"densities": "1,2"})
    assert outcome["densities"] == [1.0, 2.0]
    assert [image.size for image in images] == [(200, 150), (400, 300)]
    # The logo is a quarter of the width at both densities: at 2x its red is twice as far in.
    once, twice = (image.convert("RGB") for image in images)
    assert _close(once.getpixel((182, 134)), RED) and _close(twice.getpixel((364, 268)), RED)


def test_widths_make_the_finished_picture_smaller_plugin_steps_included(border, tmp_path):
    outcome, images = _variants(tmp_path, [border], "photo.png | fit 160x | border 2", {"widths": "82,400"})
    assert " 82w" in outcome["html"] and " 164w" in outcome["html"] and "400w" not in outcome["html"]
    assert [image.size for image in images] == [(82, 62), (164, 124)]
    half = images[0].convert("RGB")
    assert max(half.getpixel((0, 30))[:3]) < 80, "the border shrinks with the picture, to one pixel"
    assert _close(half.getpixel((3, 30)), BLUE)


def test_fill_and_a_plugin_read_south_east_as_the_built_in_southeast(installed):
    found = _run(
        """
        import json
        from fileproc_wsgi.errors import InstructionError
        from fileproc_wsgi.instructions import parse

        texts = [
            "a.jpg | fit 100x | watermark logo.png position=south-east",
            "a.jpg | fit 100x | watermark logo.png position=North-West",
            "a.jpg | fit 100x | watermark logo.png position=northwest",
            "a.jpg | fill 100x100 gravity=SOUTH-WEST",
        ]
        canonical = [parse(text).canonical.splitlines()[-1] for text in texts]
        errors = []
        for text in ("a.jpg | watermark logo.png position=smart", "a.jpg | watermark logo.png position=up"):
            try:
                parse(text)
            except InstructionError as error:
                errors.append(str(error))
        print(json.dumps({"canonical": canonical, "errors": errors}))
        """,
        [installed["watermark"]],
    )
    assert found["canonical"] == [
        "watermark logo.png",
        "watermark logo.png position=northwest",
        "watermark logo.png position=northwest",
        "fill 100x100 gravity=southwest",
    ]
    names = "center, north, south, east, west, northeast, northwest, southeast, southwest"
    assert found["errors"] == [
        f"line 1, column 37, step 'watermark': expected position to be one of {names}, got 'smart'",
        f"line 1, column 37, step 'watermark': expected position to be one of {names}, got 'up'",
    ]


def test_plugins_import_nothing_that_imports_them():
    import ast

    import fileproc_wsgi.plugins

    tree = ast.parse(pathlib.Path(fileproc_wsgi.plugins.__file__).read_text())
    own = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    assert own == {"operations"}, "plugins.py imports, even inside a function, only operations"
    from fileproc_wsgi.instructions import BUILTIN_WORDS
    from fileproc_wsgi.operations import RESERVED_WORDS

    assert BUILTIN_WORDS == RESERVED_WORDS, "each grammar entry has its operation class"


def test_a_plugin_installed_twice_is_named_with_the_version_used(tmp_path):
    target = tmp_path / "twice"
    for version in ("1.0", "2.0"):  # as pip install --target --upgrade leaves it
        _distribution(
            target, "fileproc-netpbm", "[fileproc_wsgi.engines]\nnetpbm = fileproc_netpbm\n",
            "fileproc_netpbm", NETPBM, version,
        )  # fmt: skip
    found = _run(
        """
        import json, logging
        from fileproc_wsgi import plugins

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("fileproc_wsgi.plugins").addHandler(handler)
        [plugin] = plugins.engines()
        print(json.dumps({"used": plugin.version, "log": [record.getMessage() for record in records]}))
        """,
        [target],
    )
    [message] = found["log"]
    assert "fileproc-netpbm is installed 2 times (" in message
    assert f"1.0 in {target}" in message and f"2.0 in {target}" in message
    assert message.endswith(
        f"using fileproc-netpbm {found['used']}, the first found: remove the other .dist-info directories"
    )


@dataclasses.dataclass(frozen=True)
class _Trim(PluginOperation):
    """Says it keeps the size, but crops 10 pixels off the right: a plugin's bug."""

    word: ClassVar[str] = "trim"

    def apply(self, image: Image.Image) -> Image.Image:
        return image.crop((0, 0, image.width - 10, image.height))


@pytest.mark.parametrize(
    ("source", "output", "frames"),
    [pytest.param("photo.png", "png", 1, id="still"), pytest.param("moving.gif", "gif", 3, id="animation")],
)
def test_a_step_giving_another_size_than_promised_is_resized_with_one_warning(
    tmp_path, caplog, source, output, frames
):
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.instructions import Instructions
    from fileproc_wsgi.operations import Fit
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import LocalSource

    _media(tmp_path)
    colours = [Image.new("RGB", (400, 300), colour) for colour in (BLUE, RED, (0, 160, 0))]
    colours[0].save(tmp_path / "media" / "moving.gif", save_all=True, append_images=colours[1:], duration=100)
    config = Config(
        database_url=f"sqlite:///{tmp_path / 'fp.db'}",
        storage=str(tmp_path / "results"),
        source_roots={"default": str(tmp_path / "media")},
    )
    instructions = Instructions(source, (Fit(200, None), _Trim()))
    path = str(tmp_path / "media" / source)
    with caplog.at_level(logging.WARNING, logger="fileproc_wsgi.processing"):
        result = produce(instructions, LocalSource(source, path), output, config)
    image = decode(result.data)
    assert image.size == (200, 150) and getattr(image, "n_frames", 1) == frames
    [record] = [record for record in caplog.records if "'trim'" in record.getMessage()]
    assert record.getMessage() == (
        f"fileproc_wsgi: the plugin step 'trim' ({__name__} (not installed)) gave 190x150 where its "
        f"size() said 200x150, for source {source!r}; resized to 200x150"
    )
