"""Smoke tests against real servers on 127.0.0.1: the demo and the processing server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from support import free_port, halves, http_get, serving, write

FILEPROC = [sys.executable, "-m", "fileproc_wsgi.cli"]


@contextlib.contextmanager
def _running(arguments: list[str], *, cwd, env=None):
    port = free_port()
    with serving([*FILEPROC, *arguments, "--port", str(port)], port=port, cwd=cwd, env=env):
        yield port


def _get(port: int, path: str, method: str = "GET"):
    return http_get(port, path, method)


@pytest.mark.integration
def test_demo_serves_a_page_of_real_thumbnails(tmp_path):
    with _running(["demo", "--directory", str(tmp_path / "demo")], cwd=tmp_path) as port:
        status, headers, body = _get(port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        page = body.decode()
        images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', page)
        assert len(images) >= 12
        assert "source &#x27;missing.jpg&#x27; does not exist" in page
        assert not (tmp_path / ".fileproc" / "results").exists(), "rendering the page processed images"
        for url, width, height in images:
            status, headers, _ = _get(port, url)
            assert status == 301, url
            status, headers, data = _get(port, headers["Location"].replace(f"http://127.0.0.1:{port}", ""))
            assert status == 200
            assert Image.open(io.BytesIO(data)).size == (int(width), int(height))


@pytest.mark.integration
def test_processing_server_with_environment_settings(tmp_path):
    media = tmp_path / "media"
    write(media, "a.png", halves(80, 40))
    env = {
        **os.environ,
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}",
        "FILEPROC_STORAGE": str(tmp_path / "results"),
    }
    # register adds to a store and never makes one (a wrong directory would get a new one).
    subprocess.run([*FILEPROC, "migrate"], env=env, capture_output=True, timeout=60, cwd=tmp_path, check=True)
    registered = subprocess.run(
        [*FILEPROC, "register", "a.png | fit 40x | format webp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert registered.returncode == 0, registered.stderr
    representation = json.loads(registered.stdout)
    assert (representation["width"], representation["height"]) == (40, 20)
    with _running(["serve"], cwd=tmp_path, env=env) as port:
        status, headers, _ = _get(port, representation["url"], method="HEAD")
        assert status == 301
        status, _, data = _get(port, headers["Location"].replace(f"http://127.0.0.1:{port}", ""))
        assert status == 200 and Image.open(io.BytesIO(data)).format == "WEBP"
        status, _, body = _get(port, "/_fp/" + "f" * 32 + ".jpg")
        assert status == 404 and b"no instructions registered" in body
    shown = subprocess.run(
        [*FILEPROC, "show", representation["checksum"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    job = json.loads(shown.stdout)
    assert (job["state"], job["width"], job["height"]) == ("done", 40, 20)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(
            ["register", "missing.png | fit 10x"], "source 'missing.png' does not exist", id="missing"
        ),
        pytest.param(["register", "a.png | fit 10by10"], "line 1, column 13, step 'fit'", id="bad-text"),
        pytest.param(["show", "0" * 32], "no instructions registered", id="unknown-checksum"),
    ],
)
def test_command_line_errors_are_one_line(tmp_path, arguments, message):
    env = {**os.environ, "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}"}
    subprocess.run([*FILEPROC, "migrate"], env=env, capture_output=True, timeout=60, cwd=tmp_path, check=True)
    result = subprocess.run(
        [*FILEPROC, *arguments], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
