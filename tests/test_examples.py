"""The bare WSGI example runs as documented (the Django and Flask examples are tested
beside their adapters, and all of them in a real browser in test_browser.py)."""

from __future__ import annotations

import importlib.util
import pathlib
import re

from webob import Request

from support import decode

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bare_wsgi_example_shows_thumbnails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = _load("bare_wsgi")
    app = example.make_app(example.config_for("site"))
    page = Request.blank("/").get_response(app).text
    images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert len(images) == len(example.THUMBNAILS) - 1
    assert (images[1][1], images[1][2]) == ("200", "200")
    assert "source &#x27;missing.jpg&#x27; does not exist" in page
    assert not (tmp_path / "site" / "results").exists(), "rendering processed nothing"
    for url, width, height in images:
        redirect = Request.blank(url).get_response(app)
        assert redirect.status_int == 301
        result = Request.blank(redirect.location).get_response(app)
        assert decode(result.body).size == (int(width), int(height))
    assert len(list((tmp_path / "site" / "results").glob("*/*"))) == len(images)
    app.store.dispose()


def test_bare_wsgi_example_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FILEPROC_STORAGE", str(tmp_path / "elsewhere"))
    example = _load("bare_wsgi")
    config = example.config_for("site")
    assert config.storage == f"file://{tmp_path / 'elsewhere'}"
    assert config.database_url == f"sqlite:///{tmp_path / 'site' / 'fileproc.db'}"
