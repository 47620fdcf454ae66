"""The core's import rules, checked in a fresh interpreter (ARCHITECTURE.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "fileproc_wsgi",
        "fileproc_wsgi.middleware",
        "fileproc_wsgi.registrar",
        "fileproc_wsgi.remote",
        "fileproc_wsgi.cli",
        "fileproc_wsgi.demo",
    ],
)
def test_core_never_imports_a_framework(module):
    loaded = _modules_after(f"import {module}")
    assert not {"django", "jinja2", "flask", "fileproc_django", "fileproc_flask", "fileproc_jinja2"} & loaded


def test_instructions_stay_light():
    loaded = _modules_after("import fileproc_wsgi.instructions")
    assert not {"sqlalchemy", "webob", "waitress"} & loaded


def test_pipeline_needs_no_database_or_http():
    loaded = _modules_after("import fileproc_wsgi.processing")
    assert not {"sqlalchemy", "webob"} & loaded


@pytest.mark.parametrize(
    ("adapter", "other", "framework_of_other"),
    [
        pytest.param("fileproc_django.templatetags.fileprocessor", "fileproc_jinja2", "jinja2", id="django"),
        pytest.param("fileproc_jinja2", "fileproc_django", "django", id="jinja2"),
        pytest.param("fileproc_jinja2", "fileproc_flask", "flask", id="jinja2-not-flask"),
        # Flask is Jinja2: fileproc_flask builds on fileproc_jinja2, never on Django's adapter.
        pytest.param("fileproc_flask", "fileproc_django", "django", id="flask"),
    ],
)
def test_adapters_never_import_each_other(adapter, other, framework_of_other):
    setup = "import django; from django.conf import settings; settings.configure(); django.setup()\n"
    loaded = _modules_after((setup if "django" in adapter else "") + f"import {adapter}")
    assert adapter.split(".")[0] in loaded
    assert other not in loaded
    assert framework_of_other not in loaded, f"{adapter} pulled in {framework_of_other}"


def test_a_template_host_registering_remotely_needs_no_database():
    loaded = _modules_after("import fileproc_wsgi.remote")
    assert not {"sqlalchemy", "webob", "PIL"} & loaded


# Native decoders the web process must never load to register a source (ARCHITECTURE.md,
# "Jobs in worker processes"): they run only in the pool's workers.
NATIVE_DECODERS = {"pillow_heif", "rawpy", "numpy", "pillow_jxl", "pillow_lunasvg", "pypdfium2", "wand", "av"}

REGISTER_EACH = """
import json, pathlib, sys
from fileproc_wsgi.config import Config
from fileproc_wsgi.registrar import Registrar

root = pathlib.Path(sys.argv[1])
registrar = Registrar(Config(
    database_url=f"sqlite:///{root / 'fp.db'}", storage=str(root / "results"),
    source_roots={"default": str(root / "media")},
))
sizes = {name: registrar.register(f"{name} | fit 100x").height for name in sys.argv[2:]}
registrar.close()
native = sorted(set(sys.modules) & set(json.loads(sys.stdin.read())))
print(json.dumps({"sizes": sizes, "native": native}))
"""


def test_registering_new_kinds_loads_no_native_decoder_in_the_web_process(tmp_path):
    from PIL import Image

    import test_heif
    import test_jxl
    import test_raw
    from fileproc_wsgi import samples

    picture = Image.new("RGB", (300, 200), (200, 0, 0))
    media = tmp_path / "media"
    media.mkdir()
    files = {
        "photo.heic": test_heif.encoded(picture),
        "burst.heic": test_heif.several(picture, picture.resize((200, 100)), primary=1),
        "camera.dng": test_raw.dng(picture),
        "image.jxl": test_jxl.encoded(picture),
        "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="150"><rect/></svg>',
    }
    for name, data in files.items():
        (media / name).write_bytes(data)
    samples.write_letter(str(media / "letter.docx"))  # an A4 page: 595x842 pt
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", REGISTER_EACH, str(tmp_path),
         *files, "letter.docx"],
        input=json.dumps(sorted(NATIVE_DECODERS)),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # DNG's size came from LibRaw in a worker; the others from headers read here.
    heights = {"photo.heic": 67, "burst.heic": 50, "camera.dng": 67, "image.jxl": 67, "logo.svg": 50}
    heights["letter.docx"] = 142
    assert found["sizes"] == heights
    assert found["native"] == []


def test_every_public_name_is_exported_for_type_checkers_too():
    # The names are imported lazily at run time; a TYPE_CHECKING block names each for
    # type checkers and IDEs. The two lists must not drift apart.
    import ast

    import fileproc_wsgi

    with open(fileproc_wsgi.__file__, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    (checked,) = [n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n.test)]
    names = {alias.name for node in checked.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert names == set(fileproc_wsgi.__all__) == set(fileproc_wsgi._EXPORTS)
    for name in fileproc_wsgi.__all__:
        assert getattr(fileproc_wsgi, name).__name__ == name
