"""pillow-heif's own test images, real HEIC/HEIF files from phones and cameras (Nokia's
conformance files, an iPhone's, a Xiaomi's, a Canon's rotated HIF, a 200 MP photo) and
broken ones (truncated, corrupted, empty, invalid item ids), sent through registration and
a first request as tests/test_corpus.py does for Pillow's.

pillow-heif's source distribution (BSD) carries them under ``tests/images/``; it is fetched
once with pip into a cache outside the repository, as Pillow's is, and the test fails, not
skips, when it cannot be. Every HEIF there (``.heic``, ``.heif``, ``.hif``) is registered as
``<file> | fit 200x200`` (and ``page 2`` when it holds several top-level images) in killable
workers: each must give a result at the promised size or a one-line refusal naming the
source, never a traceback, a 500, a hang or a crash; and a file pillow-heif
itself decodes within the limits must be made, not refused.

Run alone: ``.venv/bin/python -m pytest tests/test_heif_corpus.py -q`` (about 15 s on two cores).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import pillow_heif
import pytest

from test_corpus import report, run_corpus, sdist_folder

pytestmark = [pytest.mark.corpus, pytest.mark.timeout(300)]

SUFFIXES = {".heic", ".heif", ".hif"}
TOTAL_SECONDS = 60.0


def heif_images() -> Path:
    """``tests/images`` of the installed pillow-heif's source distribution, fetched once."""
    return sdist_folder("pillow-heif", pillow_heif.__version__, ("tests", "images"))


def heif_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in SUFFIXES)


# --------------------------------------------------------------------------- the worker


def heif_reads(path: Path, max_pixels: int) -> tuple[bool, bool, int]:
    """(primary image decodes, second top-level image decodes, top-level images) as plain
    pillow-heif sees the file, within the pixel limit."""
    try:
        container = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
        count = len(container)
        primary = container.primary_index
        images = [primary] + [index for index in range(count) if index != primary]
        loads = []
        for index in images[:2]:
            image = container[index]
            width, height = image.size
            image.data  # noqa: B018 - decodes
            loads.append(width * height <= max_pixels)
    except Exception:  # noqa: BLE001 - a file pillow-heif cannot read is a fact, not an error
        return False, False, 0
    return loads[0], len(loads) > 1 and loads[1], count


def judge(site, index: int, path: Path) -> tuple[list[list[str]], list[str]]:
    """Every problem one file shows, as ``[kind, text, detail]``, and each text's outcome."""
    from support import first_request

    name = f"f{index:05d}{path.suffix.lower()}"
    shutil.copyfile(path, site.media / name)
    loads, second_loads, count = heif_reads(path, site.config.max_source_pixels)
    texts = [(f"{name} | fit 200x200", loads)]
    if count > 1:
        texts.append((f"{name} | page 2 | fit 200x200", second_loads))
    problems, kinds = [], []
    for text, readable in texts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", ResourceWarning)
            outcome = first_request(site, text)
            gc.collect()
        shown = text.replace(name, str(path.relative_to(heif_images())))
        kinds.append(outcome.kind)
        problems += [[kind, shown, detail] for kind, detail in outcome.problems]
        if outcome.kind != "made" and repr(name) not in outcome.reason:
            # An empty file is no HEIF, and a limit names the pixels: the source, always.
            problems.append(["refusal does not name the source", shown, outcome.reason.strip()])
        if readable and outcome.kind != "made":
            problems.append(["refused a file pillow-heif reads", shown, outcome.reason.strip()])
        problems += [
            ["leak", shown, str(warning.message)[:200]]
            for warning in caught
            if issubclass(warning.category, ResourceWarning)
        ]
    return problems, kinds


def worker(directory: str) -> None:
    """Judge the files named on stdin, one JSON line per file on the original stdout."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a library that prints must not garble the answers
    from support import Site

    site = Site(Path(directory))
    try:
        for line in sys.stdin:
            index, path = json.loads(line)
            started = time.monotonic()
            try:
                problems, kinds = judge(site, index, Path(path))
            except Exception as error:  # noqa: BLE001 - the harness itself must report, not die
                problems, kinds = [["harness error", Path(path).name, f"{type(error).__name__}: {error}"]], []
            seconds = time.monotonic() - started
            results.write(json.dumps({"problems": problems, "kinds": kinds, "seconds": seconds}) + "\n")
    finally:
        site.close()


def test_pillow_heif_test_images(tmp_path, capsys):
    files = heif_files(heif_images())
    assert len(files) > 40, f"pillow-heif's tests/images has only {len(files)} HEIF files"
    problems, figures = run_corpus(files, tmp_path, __file__, TOTAL_SECONDS)
    with capsys.disabled():
        print(f"\nHEIF corpus: {figures['files']} files in {figures['seconds']:.0f} s: {figures['outcomes']}")
    assert not problems, report(problems, figures)
    assert figures["outcomes"].get("made", 0) > 30


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2])


def test_the_boxes_read_at_registration_agree_with_libheif_on_every_file():
    """The web process reads HEIF boxes itself (no libheif there): on every corpus file and
    its pages 1 to 3, what it decides must be what libheif gives; what it leaves open goes
    to libheif in a worker, and most files must be decided here."""
    from test_heif import both_readings

    decided, undecided, differ = 0, [], []
    for path in heif_files(heif_images()):
        data = path.read_bytes()
        for page in (1, 2, 3):
            ours, libheif = both_readings(data, page)
            if ours is None:
                undecided.append(f"{path.name} page {page}")
            elif ours != libheif:
                differ.append(f"{path.name} page {page}: here {ours}, libheif {libheif}")
            else:
                decided += 1
    assert not differ, "\n".join(differ)
    assert decided >= 140, undecided
    assert len(undecided) <= 15, undecided
