"""The examples run as documented."""

from __future__ import annotations

import importlib.util
import pathlib
import re

from webob import Request

from fileproc_wsgi.config import Config
from support import decode, halves, write

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bare_wsgi_example_shows_thumbnails(tmp_path):
    write(tmp_path, "photo.jpg", halves(800, 600))
    config = Config(
        source_roots={"default": str(tmp_path)},
        database_url=f"sqlite:///{tmp_path / 'fp.db'}",
        storage=str(tmp_path / "results"),
    )
    app = _load("bare_wsgi").make_app(config)
    page = Request.blank("/").get_response(app).text
    images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert [(int(w), int(h)) for _, w, h in images] == [(400, 300), (200, 200)]
    for url, width, height in images:
        redirect = Request.blank(url).get_response(app)
        assert redirect.status_int == 301
        result = Request.blank(redirect.location).get_response(app)
        assert decode(result.body).size == (int(width), int(height))
    app.store.dispose()


def test_bare_wsgi_example_survives_a_missing_source(tmp_path):
    config = Config(
        source_roots={"default": str(tmp_path)},
        database_url=f"sqlite:///{tmp_path / 'fp.db'}",
        storage=str(tmp_path / "results"),
    )
    app = _load("bare_wsgi").make_app(config)
    response = Request.blank("/").get_response(app)
    assert response.status_int == 200
    assert "source &#x27;photo.jpg&#x27; does not exist" in response.text
    app.store.dispose()
