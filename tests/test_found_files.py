"""Files other projects keep for testing their decoders, that broke fileproc_wsgi once.

Each is the smallest of its class found by sending thousands of public test files through
registration and a first request (issue 10); see tests/files/SOURCES.md for where each
comes from and under which licence.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from fileproc_wsgi.errors import ProcessingError, UnsupportedSourceError
from support import decode

FILES = Path(__file__).resolve().parent / "files"


def _copy(site, name: str) -> None:
    shutil.copy(FILES / name, site.media / name)


def test_an_avif_pillow_cannot_identify_is_made_by_imagemagick_or_refused_by_name(site):
    # Pillow's libavif here does not identify this file. ImageMagick reads it through
    # libheif, whose Debian build drops the alpha plane: a black square is not the
    # picture, so the file is refused saying why rather than made wrong.
    _copy(site, "alpha-plum-blossom.avif")
    try:
        representation = site.registrar.register("alpha-plum-blossom.avif | fit 64x64 | format png")
    except UnsupportedSourceError as error:
        assert "is an AVIF file with an alpha plane, which this server's ImageMagick reads" in str(error)
        return
    assert (representation.width, representation.height) == (64, 64)  # a decoder that keeps alpha
    response = site.request("alpha-plum-blossom.avif | fit 64x64 | format png")
    image = decode(response.body)
    assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGBA")
    assert image.getchannel("A").getextrema()[0] < 255


def test_a_heif_whose_header_gives_no_size_is_refused_at_registration(site):
    # ImageMagick's coder (libheif 1.15) read a 0x0 size from it; pillow-heif's libheif
    # refuses the header itself. Either way the page never points at a result.
    _copy(site, "zero-size.heic")
    with pytest.raises(ProcessingError, match="'zero-size.heic' is not a readable HEIF image"):
        site.registrar.register("zero-size.heic | fit 100x100")


def test_a_pdf_that_hangs_pdfium_is_stopped_at_the_time_limit(make_site):
    site = make_site(max_processing_seconds=1, lease_seconds=10)
    _copy(site, "form-hangs-pdfium.pdf")
    representation = site.registrar.register("form-hangs-pdfium.pdf | fit 100x")
    assert (representation.width, representation.height) == (100, 129)
    started = time.monotonic()
    response = site.get(representation.url)
    assert response.status_int == 503 and "max_processing_seconds=1" in response.text
    assert time.monotonic() - started < 10  # a fresh worker's start is not the job's time
    job = site.store.get(representation.checksum)
    assert job.state == "failed" and job.retry_at is not None  # retried later, as a time limit is
