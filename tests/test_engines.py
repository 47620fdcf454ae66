"""Engines load on a source's first need; a missing library is a refusal naming what to install.

An engine whose library is absent is simulated the way Python itself reports one: a fresh
interpreter with ``sys.modules[name] = None``, so ``import name`` raises
ModuleNotFoundError exactly as on a server where it was never installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest
from PIL import Image

from fileproc_wsgi import engines
from fileproc_wsgi.engines import heif, jxl, magick, office, pdf, raster, raw, svg, video
from fileproc_wsgi.samples import write_letter
from support import register_in_a_fresh_process
from test_heif import encoded
from test_jxl import encoded as jxl_encoded
from test_magick import float_tiff, psd
from test_raw import dng

FILES = Path(__file__).parent / "files"

# In a fresh interpreter: block the modules given, register the source given against a
# fresh store, build the middleware, and print what happened as JSON.
_PROBE = textwrap.dedent(
    """
    import ctypes.util, json, logging, sys
    for name in sys.argv[3:]:
        if name == "no-magickwand":  # Wand installed, the system without its C library
            ctypes.util.find_library = lambda name: None
        else:
            sys.modules[name] = None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from fileproc_wsgi import engines
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.errors import FileProcError
    from fileproc_wsgi.middleware import FileProcessor
    from fileproc_wsgi.registrar import Registrar

    root = sys.argv[1]
    config = Config(
        database_url=f"sqlite:///{root}/fileproc.db",
        source_roots={"default": root},
        storage=f"{root}/results",
    )
    FileProcessor(None, config)
    outcome = {}
    try:
        outcome["registered"] = Registrar(config).register(sys.argv[2]).url
    except FileProcError as error:
        outcome["refused"] = f"{type(error).__name__}: {error}"
    outcome["engines_loaded"] = sorted(
        name for name in ("wand", "av", "pypdfium2") if sys.modules.get(name) is not None
    )
    outcome["missing"] = [list(found) for found in engines.missing()]  # loads every engine
    print(json.dumps(outcome))
    """
)


def _run(root: Path, text: str, *blocked: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(root), text, *blocked],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def _mp4(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (index * 80, 0, 0)))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture
def media(tmp_path) -> Path:
    Image.new("RGB", (80, 60), "red").save(tmp_path / "a.jpg")
    Image.new("RGB", (80, 60), "blue").save(tmp_path / "doc.pdf")
    _mp4(tmp_path / "clip.mp4")
    (tmp_path / "photo.heic").write_bytes(encoded(Image.new("RGB", (80, 60), "green")))
    (tmp_path / "art.psd").write_bytes(psd(Image.new("RGB", (80, 60), "green")))
    (tmp_path / "shot.dng").write_bytes(dng(Image.new("RGB", (80, 60), "green")))
    (tmp_path / "photo.jxl").write_bytes(jxl_encoded(Image.new("RGB", (80, 60), "green")))
    (tmp_path / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    return tmp_path


def test_the_format_table_matches_each_engine():
    modules = {
        "raster": raster,
        "pdf": pdf,
        "video": video,
        "magick": magick,
        "office": office,
        "svg": svg,
        "heif": heif,
        "raw": raw,
        "jxl": jxl,
    }
    assert set(modules) == set(engines.ENGINE_NAMES)
    for name, module in modules.items():
        assert {found for found, engine in engines.ENGINE_OF.items() if engine == name} == set(module.FORMATS)


def test_this_installation_lacks_nothing():
    # The suite runs every engine for real; a library gone from the test environment shows here.
    assert engines.missing() == []


def test_a_jpeg_site_loads_no_other_engine_and_warns_of_nothing(media):
    outcome, log = _run(media, "a.jpg | fit 40x")
    assert outcome["registered"].startswith("/_fp/")
    assert outcome["engines_loaded"] == []
    assert "WARNING" not in log


@pytest.mark.parametrize(
    ("text", "blocked", "engine", "extra", "advice"),
    [
        pytest.param(
            "doc.pdf | fit 40x", ["pypdfium2"], "pdf", "pdf", "pip install 'fileproc-wsgi[pdf]'", id="pdf"
        ),
        pytest.param(
            "clip.mp4 | fit 40x", ["av"], "video", "video", "pip install 'fileproc-wsgi[video]'", id="video"
        ),
        pytest.param(
            "art.psd | fit 40x",
            ["wand"],
            "imagemagick",
            "wand",
            "pip install 'fileproc-wsgi[wand]'",
            id="imagemagick",
        ),
        pytest.param(
            "photo.heic | fit 40x",
            ["pillow_heif"],
            "heif",
            "heif",
            "pip install 'fileproc-wsgi[heif]'",
            id="heif",
        ),
        pytest.param(
            "shot.dng | fit 40x", ["rawpy"], "raw", "raw", "pip install 'fileproc-wsgi[raw]'", id="raw"
        ),
        pytest.param(
            "photo.jxl | fit 40x", ["pillow_jxl"], "jxl", "jxl", "pip install 'fileproc-wsgi[jxl]'", id="jxl"
        ),
        pytest.param(
            "drawing.svg | fit 40x",
            ["pillow_lunasvg"],
            "svg",
            "svg",
            "pip install 'fileproc-wsgi[svg]'",
            id="svg",
        ),
    ],
)
def test_a_source_needing_a_missing_library_is_refused_naming_the_extra(
    media, text, blocked, engine, extra, advice
):
    outcome, log = _run(media, text, *blocked)
    source = text.split(" |")[0]
    assert outcome["refused"].startswith(f"MissingLibraryError: source {source!r} is ")
    assert "lacks the library to read it" in outcome["refused"]
    assert outcome["refused"].endswith(advice)
    assert [found[:2] for found in outcome["missing"]] == [[engine, extra]]
    assert advice not in outcome["missing"][0][2], "the extra is a field of its own, not repeated in why"
    # Nothing is said about it until a source needs it: not when the middleware is built.
    assert "WARNING" not in log


def test_with_its_library_present_the_same_source_registers(media):
    outcome, _ = _run(media, "doc.pdf | fit 40x")
    assert outcome["registered"].startswith("/_fp/")
    assert outcome["engines_loaded"] == []  # PDFium read the page in a worker
    assert outcome["missing"] == []


def test_registration_loads_no_native_decoder(media):
    # A hostile file must not crash the web process while a template renders, nor every
    # registering host load PDFium, FFmpeg and ImageMagick: the headers only native code
    # reads are read in a worker, and the sizes promised are still the sources' own.
    (media / "float.tif").write_bytes(float_tiff(Image.new("RGB", (70, 50), "green")))
    write_letter(str(media / "letter.docx"))
    expected = {
        "a.jpg": [80, 60],
        "doc.pdf": [80, 60],  # Pillow's PDF: 72 dpi, a point a pixel
        "doc.pdf | fit 40x": [40, 30],
        "clip.mp4": [64, 48],
        "clip.mp4 | frame 50% | fit 32x": [32, 24],
        "art.psd": [80, 60],
        "float.tif | fit 35x": [35, 25],  # a TIFF only ImageMagick reads
        "photo.heic": [80, 60],
        "shot.dng": [80, 60],
        "photo.jxl": [80, 60],
        "drawing.svg | upscale | fit 16x": [16, 16],
        "letter.docx | fit 85x": [85, 120],  # A4
        "doc.pdf | page 2": "ProcessingError: page 2: 'doc.pdf' has only 1 page(s)",
    }
    sizes, loaded = register_in_a_fresh_process(media, expected)
    assert sizes == expected
    assert loaded == []


def test_wand_without_imagemagicks_library_names_the_system_package(media):
    outcome, _ = _run(media, "art.psd | fit 40x", "no-magickwand")
    assert [found[:2] for found in outcome["missing"]] == [["imagemagick", None]]
    why = outcome["missing"][0][2]
    assert "Wand is installed but cannot load ImageMagick's MagickWand library" in why
    assert "libmagickwand" in why
    assert outcome["refused"].endswith(why)
    assert "pip install" not in outcome["refused"]
