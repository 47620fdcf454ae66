"""The examples in a real browser: headless Chromium (Playwright driving the system's
``/usr/bin/chromium``) against each example served by waitress on 127.0.0.1.

For each page: a cold page points every picture at its ``/_fp/`` URL, and each loads
through a redirect at the size the page predicted, its result then in storage. Once made,
the page prints each result's own URL: a fresh browser loads it with no redirect at all.
A screenshot of each page is kept in ``test-artifacts/`` (or ``$FILEPROC_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
import time

import pytest
from playwright.sync_api import sync_playwright

from support import CHROMIUM, CHROMIUM_FLAGS, free_port, http_get, pip_install_target, serving

pytestmark = pytest.mark.integration  # Chromium and the examples, each a server

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = pathlib.Path(os.environ.get("FILEPROC_TEST_ARTIFACTS", ROOT / "test-artifacts"))
_CHECKSUM = re.compile(r"/_fp/([0-9a-f]{32})\.([a-z]+)$")
_RESULT = re.compile(r"/([0-9a-f]{32})\.([a-z]+)$")  # a result's own URL ends with its name
_FP_URL = re.compile(r"/_fp/[0-9a-f]{32}\.[a-z]+\b")

# name, command (run in the test's directory), results directory relative to it
EXAMPLES = [
    pytest.param(
        [sys.executable, str(ROOT / "examples" / "django_site" / "serve.py"), "--directory", "site"],
        "site/media/fileproc",
        id="django",
    ),
    pytest.param(
        [sys.executable, str(ROOT / "examples" / "flask_app.py"), "--directory", "site"],
        "site/fileproc/results",
        id="flask",
    ),
    pytest.param(
        [sys.executable, str(ROOT / "examples" / "bare_wsgi.py"), "--directory", "site"],
        "site/results",
        id="bare-wsgi",
    ),
    pytest.param(
        [sys.executable, "-m", "fileproc_wsgi.cli", "demo", "--directory", "site"],
        ".fileproc/results",
        id="fileproc-demo",
    ),
]

# Every <img> once the page is done: where it came from, what it promised, and how many
# pixels wide the picture really is. naturalWidth alone is not that: for a srcset with
# width descriptors it is corrected by the chosen density, so the chosen URL is decoded again
# (from the browser's cache) without a srcset.
_IMAGES = """async () => Promise.all(Array.from(document.images).map(async img => {
    const plain = new Image();
    plain.src = img.currentSrc;
    await plain.decode();
    return {
        src: img.getAttribute("src"),
        current: img.currentSrc,
        srcset: [img, ...(img.parentElement.tagName === "PICTURE" ? img.parentElement.children : [])]
            .map(element => element.getAttribute("srcset")).filter(Boolean).join(", "),
        width: img.getAttribute("width"),
        pixels: plain.naturalWidth,
    };
}))"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory) -> dict[str, str]:
    """The environment of a site that has the example plugin installed (as ``bin/dev
    demo`` has it): the demo page's watermark entry needs it."""
    target = tmp_path_factory.mktemp("plugins")
    pip_install_target(ROOT / "examples" / "fileproc-watermark", target)
    path = [str(target), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _results(directory: pathlib.Path) -> set[str]:
    return {path.stem for path in directory.glob("*/*") if not path.name.startswith(".")}


def _expected_width(image: dict) -> int:
    """The width the page promised for the variant the browser chose."""
    current = image["current"]
    for candidate in (image["srcset"] or "").split(","):
        url, _, descriptor = candidate.strip().partition(" ")
        if current.endswith(url) and descriptor.endswith("w"):
            return int(descriptor[:-1])
    return int(image["width"])


def _load(browser, url: str, screenshot: str) -> tuple[str, list[dict], dict[str, int]]:
    """Load ``url`` in a fresh browser context (nothing cached): the page's HTML as served,
    every <img> once done, and the status of each response by URL."""
    context = browser.new_context(viewport={"width": 1280, "height": 4000})
    statuses: dict[str, int] = {}
    page = context.new_page()
    page.on("response", lambda response: statuses.setdefault(response.url, response.status))
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200
    served = response.text()
    page.wait_for_function("Array.from(document.images).every(img => img.complete)", timeout=30_000)
    images = page.evaluate(_IMAGES)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    context.close()
    return served, images, statuses


@pytest.mark.parametrize(("command", "results"), EXAMPLES)
def test_every_picture_loads_through_the_redirect_then_from_its_own_url(
    browser, example_plugin, tmp_path, request, command, results
):
    port = free_port()
    name = request.node.callspec.id
    with serving([*command, "--port", str(port)], port=port, cwd=tmp_path, env=example_plugin, timeout=60):
        # The browser asks for the page first: its first render starts the page's jobs in
        # the background, so a later render may already print some results' own URLs.
        page_html, cold, redirected = _load(browser, f"http://127.0.0.1:{port}/", f"browser-{name}.png")
        assert page_html.count("<img") >= 4
        # Only the demo's deliberately missing source may fail (softly): every other entry,
        # the plugin's, the SVG's and the Word document's among them, is a picture.
        errors = re.findall(r'<p class="error">(.*?)</p>', page_html)
        assert all("missing.jpg" in error for error in errors), errors
        sources = re.findall(r'<img src="([^"]+)"', page_html)
        assert all(_CHECKSUM.search(src) for src in sources), "a cold page points at /_fp/ URLs"
        made = _results(tmp_path / results)
        assert cold
        for image in cold:
            where = _CHECKSUM.search(image["current"])
            assert where, f"{image['current']} is not a fileproc URL"
            assert redirected.get(image["current"]) == 301, f"{image['current']} did not redirect"
            assert image["pixels"] == _expected_width(image), image
            assert where.group(1) in made, f"{image['current']} has no result in storage"

        # Every result is made now: within a second at most, the page prints their own URLs.
        deadline = time.monotonic() + 10
        while _FP_URL.search(http_get(port, "/")[2].decode()):
            assert time.monotonic() < deadline, "the page still prints /_fp/ URLs"
            time.sleep(0.1)
        _, warm, statuses = _load(browser, f"http://127.0.0.1:{port}/", f"browser-{name}-warm.png")

    assert len(warm) == len(cold)
    for image in warm:
        where = _RESULT.search(image["current"])
        url = image["current"]
        assert where and not _CHECKSUM.search(url), f"{url} is not a result's own URL"
        assert statuses.get(url) == 200, f"{url} answered {statuses.get(url)}"
        assert image["pixels"] == _expected_width(image), image
        assert where.group(1) in made
    assert 301 not in statuses.values(), "no redirect once the results are made"
