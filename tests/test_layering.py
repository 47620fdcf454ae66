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
        "fileproc_wsgi.cli",
        "fileproc_wsgi.demo",
    ],
)
def test_core_never_imports_a_framework(module):
    loaded = _modules_after(f"import {module}")
    assert not {"django", "jinja2", "flask", "fileproc_django", "fileproc_jinja2"} & loaded


def test_instructions_stay_light():
    loaded = _modules_after("import fileproc_wsgi.instructions")
    assert not {"sqlalchemy", "webob", "waitress"} & loaded


def test_pipeline_needs_no_database_or_http():
    loaded = _modules_after("import fileproc_wsgi.processing")
    assert not {"sqlalchemy", "webob"} & loaded
