"""The core's import rules, checked in a fresh interpreter (ARCHITECTURE.md)."""

from __future__ import annotations

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
