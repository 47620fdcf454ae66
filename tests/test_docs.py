"""The documentation site builds offline with warnings as errors, and its generated parts are whole.

One Sphinx build (``-W --keep-going -n``: a broken link or anchor, an unresolved API name,
a Config field with no description and a step picture of the wrong size all fail it) is
shared by the checks: the configuration page names every Config field, the command-line
page every ``fileproc`` subcommand, and every picture the instruction-language page shows
exists and decodes at the size its step promised.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from fileproc_wsgi.config import Config
from fileproc_wsgi.instructions import BUILTIN_WORDS

DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD_SECONDS = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    html = tmp_path_factory.mktemp("docs") / "html"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", DOCS, html],
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
        cwd=html.parent,
    )
    print(f"docs build: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-6000:]
    return html


@pytest.mark.timeout(BUILD_SECONDS + 60)
def test_configuration_page_names_every_field(site):
    page = (site / "configuration.html").read_text(encoding="utf-8")
    for field in dataclasses.fields(Config):
        assert f'id="config-{field.name.replace("_", "-")}"' in page, field.name
        assert f"FILEPROC_{field.name.upper()}" in page, field.name


def _subcommands() -> list[str]:
    help_text = subprocess.run(
        [sys.executable, "-c", "from fileproc_wsgi.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return re.search(r"\{([a-z,]+)\}", help_text).group(1).split(",")


@pytest.mark.timeout(BUILD_SECONDS + 60)
def test_cli_page_names_every_subcommand(site):
    page = (site / "cli.html").read_text(encoding="utf-8")
    commands = _subcommands()
    assert "serve" in commands and "gc" in commands
    for command in commands:
        assert f'id="fileproc-{command}"' in page, command
        assert f"fileproc {command}" in page, command


@pytest.mark.timeout(BUILD_SECONDS + 60)
def test_every_step_picture_decodes_at_its_promised_size(site):
    pictures = site / "_images" / "fileproc"
    records = json.loads((pictures / "manifest.json").read_text(encoding="utf-8"))
    page = (site / "language.html").read_text(encoding="utf-8")
    words = set()
    for record in records:
        path = pictures / record["file"]
        assert path.is_file(), record
        with Image.open(path) as picture:
            picture.load()
            assert picture.size == (record["width"], record["height"]), record
        assert f'_images/fileproc/{record["file"]}" width="{record["width"]}"' in page, record
        steps = [step.split() for step in record["text"].split("|")]
        words |= {"source"} | {step[0] for step in steps[1:] if step}
    assert BUILTIN_WORDS <= words, sorted(BUILTIN_WORDS - words)
