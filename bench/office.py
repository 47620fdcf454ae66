"""Office documents: what LibreOffice's conversion costs, per kind, and what the kept PDF saves.

What it measures, for a one-page DOCX, XLSX, PPTX, ODT and RTF (made here, as the tests
make them) through ``produce(parse("<doc> | fit 400x | format jpeg"), ...)`` in-process,
the engine's whole path (content sniffed, page size read, LibreOffice in its box, the PDF
page rendered by PDFium):

    first   the first document in a fresh cache directory: the profile template is made
            (one LibreOffice start that sets up a profile) and then the conversion
    cold    a document not converted yet, the template already there: one conversion
    page 2  another page of a document already converted: read from the kept PDF

Each kind is converted ``--runs`` times (a fresh cache directory per run, the template
copied in), and the median and best are printed; ``page 2`` is the median of as many reads.

Usage: ``python bench/office.py [--runs N]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fileproc_wsgi.config import Config  # noqa: E402
from fileproc_wsgi.engines import soffice  # noqa: E402
from fileproc_wsgi.instructions import parse  # noqa: E402
from fileproc_wsgi.processing import produce  # noqa: E402
from fileproc_wsgi.sources import LocalSource  # noqa: E402
from test_office import make_docx, make_odt, make_pptx, make_rtf, make_xlsx  # noqa: E402

KINDS = {"docx": make_docx, "xlsx": make_xlsx, "pptx": make_pptx, "odt": make_odt, "rtf": make_rtf}


def _make(path: Path, cache: Path, text: str) -> float:
    config = Config(
        source_roots={"default": str(path.parent)},
        storage=str(cache.parent / "results"),
        database_url=f"sqlite:///{cache.parent / 'db'}",
        document_cache=str(cache),
    )
    started = time.perf_counter()
    produce(parse(text), LocalSource(path.name, str(path)), "jpeg", config)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    if soffice.find() is None:
        sys.exit("LibreOffice is not installed (bin/dev installs it)")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        documents = {}
        for kind, make in KINDS.items():
            documents[kind] = root / f"sample.{kind}"
            if kind == "docx":
                make(documents[kind], pages=2)
            else:
                make(documents[kind])
        first = _make(documents["docx"], root / "first" / "cache", "sample.docx | fit 400x")
        template = next((root / "first" / "cache").glob("profile-*"))
        print(f"LibreOffice {soffice.find()}; network namespace: {soffice.network_isolated()}")
        print(f"first conversion, profile template included (docx): {first:.2f} s\n")
        print(f"{'kind':6} {'cold median':>12} {'cold best':>10} {'page 2 median':>14}")
        for kind, path in documents.items():
            cold, warm = [], []
            for run in range(runs):
                cache = root / f"{kind}-{run}" / "cache"
                cache.mkdir(parents=True)
                shutil.copytree(template, cache / template.name)
                cold.append(_make(path, cache, f"{path.name} | fit 400x"))
                page = 2 if kind == "docx" else 1
                warm.append(_make(path, cache, f"{path.name} | page {page} | fit 400x | format jpeg"))
            print(
                f"{kind:6} {statistics.median(cold):>11.2f}s {min(cold):>9.2f}s "
                f"{statistics.median(warm) * 1000:>12.1f}ms"
            )


if __name__ == "__main__":
    main()
