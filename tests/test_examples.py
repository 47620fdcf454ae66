"""The examples run as documented (and all of them in a real browser in test_browser.py)."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

from webob import Request

from support import decode, free_port, http_get, serving

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


def test_flask_example_shows_pictures_and_initials_where_there_is_none(tmp_path):
    example = _load("flask_app")
    app = example.create_app(instance_path=str(tmp_path / "site"))
    results = tmp_path / "site" / "fileproc" / "results"
    try:
        client = app.test_client()
        page = client.get("/")
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert "fileprocessor" not in text and "No picture: missing.jpg" in text
        # Grace (None) and Margaret ("") have no picture: the empty branch, not an error.
        assert re.findall(r'title="no picture">(\w)<', text) == ["G", "M"]
        assert re.findall(r'width="96" height="96" alt="(\w+)"[^>]* class="avatar"', text) == ["Ada", "Linus"]
        assert not results.exists(), "rendering processed nothing"

        images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', text)
        assert len(images) == 7
        for url, width, height in images:
            redirect = client.get(url)
            assert redirect.status_code == 301
            result = client.get(redirect.location)
            assert result.status_code == 200
            assert decode(result.data).size == (int(width), int(height))
        assert len(list(results.glob("*/*"))) == 7
    finally:
        example.fileproc.close(app)


def test_flask_example_runs_with_one_command(tmp_path):
    port = free_port()
    command = [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", str(port), "--directory", "site"]
    with serving(command, port=port, cwd=tmp_path, timeout=60) as process:
        assert process.stdout.readline().decode().strip().endswith(f"http://127.0.0.1:{port}/")
        status, _, body = http_get(port, "/")
    assert status == 200
    assert body.decode().count("<img") == 7
    assert {"uploads", "fileproc"} <= {path.name for path in (tmp_path / "site").iterdir()}
