"""Pillow's own test images, about a thousand truncated, fuzzed and odd files, sent through
registration and a first request the way a page and a browser would.

Pillow's source distribution ships them under ``Tests/images/``; it is fetched once with
pip (the package index is the one network source CI has) into a cache outside the
repository and reused. Each file is registered as ``<file> | fit 200x200`` (and ``page 2``
for files with more than one frame) and its URL asked for, in worker processes this test
starts: a hang is killed after :data:`FILE_SECONDS` and a crash costs only that worker,
and both are reported with the file's name. Every failure is collected and reported at the
end, grouped by kind: an exception or ``500``, a ``503``, a size other than the one
promised, a reason that does not read as a sentence, a refusal of a file plain Pillow
opens and loads fully in a format the README offers, a hang, a crash, a leak.

Run alone: ``.venv/bin/python -m pytest tests/test_corpus.py -q`` (about a minute on two cores).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import PIL
import pytest

pytestmark = [pytest.mark.corpus, pytest.mark.timeout(900)]

# Formats the README offers for images; a file Pillow reads fully in one of them is made.
OFFERED = {"JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP"}
FILE_SECONDS = 30.0  # one file's registration and first request (and its page 2)
TOTAL_SECONDS = 600.0  # the whole corpus: far above the ~1 minute it takes, far below a hang
WORKERS = 2
SHOWN_PER_KIND = 40


def sdist_folder(project: str, version: str, folder: tuple[str, ...]) -> Path:
    """``folder`` (e.g. ``("Tests", "images")``) of ``project``'s source distribution at
    ``version``, fetched once with pip into a cache outside the repository and reused. The
    test fails, never skips, when it cannot be fetched."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    target = Path(base) / "fileproc-tests" / f"{project}-{version}-{folder[-1]}"
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory(prefix=f"fileproc-{project}-sdist-") as download:
        # --no-binary for this project alone: its build requirements may come as wheels,
        # which pip needs to read the sdist's metadata.
        done = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                "--no-deps", "--no-binary", project, "--dest", download, f"{project}=={version}",
            ],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        archives = list(Path(download).glob("*.tar.gz"))
        if done.returncode != 0 or len(archives) != 1:
            pytest.fail(
                f"could not download {project}'s sdist with pip:\n{done.stdout}{done.stderr}", pytrace=False
            )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        depth = 1 + len(folder)
        with tarfile.open(archives[0]) as archive:
            for member in archive:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) <= depth or parts[1:depth] != folder:
                    continue
                if any(part in ("", ".", "..") for part in parts[depth:]):
                    continue
                destination = partial.joinpath(*parts[depth:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
        (partial / ".complete").write_text(version)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def pillow_images() -> Path:
    """``Tests/images`` of the installed Pillow's source distribution, fetched once."""
    return sdist_folder("pillow", PIL.__version__, ("Tests", "images"))


def corpus_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and path.name != ".complete")


# --------------------------------------------------------------------------- the worker


def pillow_reads(path: Path, max_pixels: int) -> tuple[str | None, bool, bool, int]:
    """(format, first frame loads, second frame loads, frames) as plain Pillow sees the file,
    within the default limits."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(path)
        except Exception:
            return None, False, False, 0
        with image:
            found = image.format
            try:
                frames = getattr(image, "n_frames", 1)
                first = image.width * image.height <= max_pixels
                image.load()
            except Exception:
                return found, False, False, 0
            second = False
            if frames > 1:
                try:
                    image.seek(1)
                    image.load()
                    second = image.width * image.height <= max_pixels
                except Exception:
                    second = False
            return found, first, second, frames


def judge(site, index: int, path: Path) -> tuple[list[list[str]], list[str]]:
    """Every problem one corpus file shows, as ``[kind, text, detail]``, and the outcome of
    each text sent ("made", "refused at registration" ...)."""
    from fileproc_wsgi import formats
    from support import first_request

    name = f"f{index:05d}{''.join(path.suffixes[-1:]).lower()[:8]}"
    shutil.copyfile(path, site.media / name)
    found, loads, second_loads, frames = pillow_reads(path, site.config.max_source_pixels)
    with open(path, "rb") as handle:
        sniffed = formats.sniff(handle.read(formats.HEAD_BYTES))
    fmt = formats.display_name(sniffed) if sniffed else None
    problems, kinds = [], []
    texts = [(f"{name} | fit 200x200", loads)]
    if frames > 1:
        texts.append((f"{name} | page 2 | fit 200x200", second_loads))
    for text, readable in texts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", ResourceWarning)
            outcome = first_request(site, text, fmt=fmt)
            gc.collect()
        shown = text.replace(name, path.name)
        kinds.append(outcome.kind)
        for kind, detail in outcome.problems:
            problems.append([kind, shown, detail])
        if readable and found in OFFERED and outcome.kind != "made":
            problems.append(["refused a file Pillow reads", shown, f"{found}: {outcome.reason.strip()}"])
        for warning in caught:
            if issubclass(warning.category, ResourceWarning):
                problems.append(["leak", shown, str(warning.message)[:200]])
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


class Worker:
    """One worker process, fed one file at a time, killed when a file takes too long;
    ``script`` is the test module whose ``worker`` judges the files (this one's by default)."""

    def __init__(self, directory: Path, log, script: str = __file__):
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "worker", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        self.path: Path | None = None
        self.started = 0.0

    def send(self, index: int, path: Path) -> None:
        self.path, self.started = path, time.monotonic()
        self.process.stdin.write(json.dumps([index, str(path)]) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait(timeout=30)
        self.process.stdin.close()
        self.process.stdout.close()


def run_corpus(
    files: list[Path], work: Path, script: str = __file__, total_seconds: float = TOTAL_SECONDS
) -> tuple[dict[str, list[str]], dict]:
    """Problems by kind, and figures: files, seconds, slowest files; ``script`` as for :class:`Worker`."""
    problems: dict[str, list[str]] = {}
    timings: list[tuple[float, str]] = []
    outcomes: dict[str, int] = {}
    pending = list(enumerate(files))[::-1]
    started = time.monotonic()
    generation = 0
    with open(work / "workers.log", "w") as log:

        def start() -> Worker:
            nonlocal generation
            generation += 1
            return Worker(work / f"site{generation}", log, script)

        idle = [start() for _ in range(WORKERS)]
        busy: dict[int, Worker] = {}
        try:
            while pending or busy:
                assert time.monotonic() - started < total_seconds, f"corpus run over {total_seconds} s"
                while pending and idle:
                    current = idle.pop()
                    current.send(*pending.pop())
                    busy[current.process.stdout.fileno()] = current
                ready, _, _ = select.select(list(busy), [], [], 1.0)
                for descriptor in ready:
                    current = busy.pop(descriptor)
                    line = current.process.stdout.readline()
                    if line:
                        answer = json.loads(line)
                        timings.append((answer["seconds"], current.path.name))
                        for kind in answer["kinds"]:
                            outcomes[kind] = outcomes.get(kind, 0) + 1
                        for kind, text, detail in answer["problems"]:
                            problems.setdefault(kind, []).append(f"{text}: {detail}")
                        idle.append(current)
                        continue
                    code = current.process.wait(timeout=30)
                    problems.setdefault("crash", []).append(f"{current.path.name}: worker exited {code}")
                    current.stop()
                    idle.append(start())
                for descriptor, current in list(busy.items()):
                    if time.monotonic() - current.started > FILE_SECONDS:
                        problems.setdefault("hang", []).append(
                            f"{current.path.name}: over {FILE_SECONDS:g} s"
                        )
                        del busy[descriptor]
                        current.stop()
                        idle.append(start())
        finally:
            for current in idle + list(busy.values()):
                current.process.stdin.close()
                try:
                    current.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                current.stop()
    timings.sort(reverse=True)
    figures = {
        "files": len(files),
        "seconds": time.monotonic() - started,
        "slowest": timings[:5],
        "outcomes": outcomes,
    }
    return problems, figures


def report(problems: dict[str, list[str]], figures: dict) -> str:
    lines = [
        f"{sum(map(len, problems.values()))} problems in {figures['files']} files "
        f"({figures['seconds']:.0f} s; slowest: "
        + ", ".join(f"{name} {seconds:.1f} s" for seconds, name in figures["slowest"])
        + ")"
    ]
    for kind, found in sorted(problems.items(), key=lambda item: -len(item[1])):
        lines.append(f"\n== {kind}: {len(found)}")
        lines += [f"  {item}" for item in found[:SHOWN_PER_KIND]]
        if len(found) > SHOWN_PER_KIND:
            lines.append(f"  ... and {len(found) - SHOWN_PER_KIND} more")
    return "\n".join(lines)


def test_pillow_test_images(tmp_path, capsys):
    files = corpus_files(pillow_images())
    assert len(files) > 900, f"Pillow's Tests/images has only {len(files)} files"
    problems, figures = run_corpus(files, tmp_path)
    with capsys.disabled():
        print(f"\ncorpus: {figures['files']} files in {figures['seconds']:.0f} s: {figures['outcomes']}")
    assert not problems, report(problems, figures)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2])
