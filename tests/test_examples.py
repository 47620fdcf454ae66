"""The examples run as documented (and all of them in a real browser in test_browser.py)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import pytest
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
    assert all(url.startswith("/_fp/") for url, _, _ in images), "rendered before anything was made"
    for url, width, height in images:
        redirect = Request.blank(url).get_response(app)
        assert redirect.status_int == 301
        result = Request.blank(redirect.location).get_response(app)
        assert decode(result.body).size == (int(width), int(height))
    assert len(list((tmp_path / "site" / "results").glob("*/*"))) == len(images)
    app.close()


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

        images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', text)
        assert len(images) == 7
        assert all(url.startswith("/_fp/") for url, _, _ in images), "rendered before anything was made"
        # The one <img> the template writes itself (as scan) loads as the block's do.
        assert all('loading="lazy" decoding="async"' in tag for tag in re.findall(r"<img [^>]*>", text))
        for url, width, height in images:
            redirect = client.get(url)
            assert redirect.status_code == 301
            result = client.get(redirect.location)
            assert result.status_code == 200
            assert decode(result.data).size == (int(width), int(height))
        # The rest of the page (srcset widths, <picture> sources) is made in the background,
        # with the one width the source cannot reach (registered, printed as the image).
        page_urls = set(re.findall(r"/_fp/[0-9a-f]{32}\.\w+", text))
        assert len(page_urls) == 11  # 7 <img>, two smaller srcset widths, AVIF and WebP

        def made_files() -> set[str]:  # a result being written is a hidden temporary until done
            return {f"/_fp/{path.name}" for path in results.glob("*/*") if not path.name.startswith(".")}

        deadline = time.monotonic() + 30
        while len(made_files()) < len(page_urls) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        made = made_files()
        assert page_urls <= made and len(made) == len(page_urls) + 1, "every registration made once"
    finally:
        example.fileproc.close(app)


@pytest.mark.integration
def test_flask_example_runs_with_one_command(tmp_path):
    port = free_port()
    command = [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", str(port), "--directory", "site"]
    with serving(command, port=port, cwd=tmp_path, timeout=60) as process:
        assert process.stdout.readline().decode().strip().endswith(f"http://127.0.0.1:{port}/")
        status, _, body = http_get(port, "/")
    assert status == 200
    assert body.decode().count("<img") == 7
    assert {"uploads", "fileproc"} <= {path.name for path in (tmp_path / "site").iterdir()}


def test_django_examples_commands_find_one_site_from_any_directory(tmp_path):
    # serve.py and manage.py without --directory: one site, next to the example.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SITE_DIRECTORY", "DJANGO_SETTINGS_MODULE")
    }
    found = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "django_site" / "manage.py"), "diffsettings", "--all"],
            cwd=tmp_path / name,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        found.append(re.search(r"^MEDIA_ROOT = (.+)$", done.stdout, re.MULTILINE).group(1))
        assert not list((tmp_path / name).iterdir()), "a command left a folder in the current directory"
    assert found[0] == found[1]
    assert str(EXAMPLES / "django_site" / "instance" / "media") in found[0]


@pytest.mark.integration
def test_django_example_shows_its_models_photos_from_its_own_database(tmp_path):
    site = tmp_path / "site"
    port = free_port()
    serve = EXAMPLES / "django_site" / "serve.py"
    with serving(
        [sys.executable, str(serve), "--directory", "site", "--port", str(port)],
        port=port,
        cwd=tmp_path,
        timeout=60,
    ):
        status, _, body = http_get(port, "/")
        page = body.decode()
        assert status == 200, page
        # The row whose optional ImageField is empty prints the block's {% empty %} branch.
        assert re.search(
            r'<div class="placeholder">No picture yet</div>\s*<figcaption>A photo yet to come', page
        )
        assert "photos/missing.jpg is not there" in page

        images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', page)
        assert len(images) == 5 + 3  # the showcase, then a square of each photo that has one
        assert all(url.startswith("/_fp/") for url, _, _ in images), "rendered before anything was made"
        srcset = [
            url for value in re.findall(r'srcset="([^"]+)"', page) for url in re.findall(r"(/_fp/\S+)", value)
        ]
        assert len(srcset) == 3 + 2  # three widths; AVIF and WebP sources
        for url, width, height in images:
            status, headers, _ = http_get(port, url)
            assert status == 301, url
            status, _, result = http_get(port, urllib.parse.urlsplit(headers["Location"]).path)
            assert status == 200
            assert decode(result).size == (int(width), int(height)), url

        # Eight images asked for; the server makes the variants of srcset and <picture> the
        # test did not ask for in the background, once each.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        # With the one width the showcase cannot reach: registered, printed as the image.
        made = len({url for url, _, _ in images} | set(srcset)) + 1
        deadline = time.monotonic() + 30
        while "jobs: 0 pending, 0 working" not in (stats := _stats(site, elsewhere)):
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)
        assert f"jobs: 0 pending, 0 working, {made} done, 0 failed" in stats, stats

    # The jobs are in the site's own database, next to the photos' table.
    with sqlite3.connect(site / "site.db") as database:
        tables = {name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    database.close()
    assert {"gallery_photo", "fileproc_jobs"} <= tables


def _stats(site, directory) -> str:
    """What ``manage.py fileproc stats`` prints for the Django example at ``site``, run from
    ``directory``."""
    stats = subprocess.run(
        [sys.executable, str(EXAMPLES / "django_site" / "manage.py"), "fileproc", "stats"],
        cwd=directory,
        env={**os.environ, "DJANGO_SITE_DIRECTORY": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stats.returncode == 0, stats.stderr
    return stats.stdout
