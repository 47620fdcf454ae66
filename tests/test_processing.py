"""How processing records what went wrong: a stalled worker stores nothing over the one
that took over, and a fault of the host (a root not mounted, a library not installed) is
retried with backoff instead of being recorded against the source for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from PIL import Image

from support import decode, halves, write


def test_a_stalled_worker_does_not_overwrite_the_result_of_the_one_that_took_over(make_site, monkeypatch):
    site = make_site(lease_seconds=2, max_processing_seconds=1)
    write(site.media, "photo.jpg", halves(200, 100))
    representation = site.registrar.register("photo.jpg | fit 50x")
    processor = site.app.processor
    job = site.store.get(representation.checksum)
    stalled = site.store.claim(job.checksum, lease=0.01)  # this worker's lease runs out at once
    time.sleep(0.05)
    taken_over = site.store.claim(job.checksum, lease=60)
    assert (stalled, taken_over) == (1, 2)

    written = []
    monkeypatch.setattr(site.app.storage, "put", lambda key, data: written.append(key))
    try:
        processor._run(site.store.get(job.checksum), stalled)
    except Exception as error:
        assert type(error).__name__ == "LeaseLostError" and "taken over before storing" in str(error)
    else:
        raise AssertionError("the stalled worker went on to store its result")
    assert written == [], "nothing stored by the worker whose lease was taken over"
    assert site.store.get(job.checksum).state == "working", "the newer claim is untouched"


def test_a_root_not_on_this_server_is_settings_to_put_right_not_a_missing_file(make_site, tmp_path):
    """The issue's `fileproc warm` run with another site's roots: the job must wait for the
    settings to be right, not be recorded as a source that does not exist."""
    import dataclasses

    from webob import Request

    from fileproc_wsgi.middleware import FileProcessor

    site = make_site()
    write(site.media, "a.png", halves(40, 20))
    registered = site.registrar.register("a.png | fit 20x")
    elsewhere = dataclasses.replace(site.config, source_roots={"default": str(tmp_path / "not-mounted")})
    wrong = FileProcessor(None, elsewhere, store=site.store)
    answer = Request.blank(registered.url).get_response(wrong)
    assert answer.status_int == 503 and int(answer.headers["Retry-After"]) > 0
    assert "root is not a directory on this server" in answer.text
    assert str(tmp_path) not in answer.text
    job = site.store.get(registered.checksum)
    assert job.state == "failed" and job.retry_at is not None, "recorded as a permanent failure"

    site.store.reset([registered.checksum])  # fileproc retry, or the retry time passing
    assert site.request("a.png | fit 20x").status_int == 200


# A host built without the pdf extra: pypdfium2 shadowed by a package that fails to import
# as an absent one does, for this interpreter and the job workers it starts (they inherit
# PYTHONPATH), so the refusal crosses the worker boundary as it would in production.
_HOST_WITHOUT_PDFIUM = textwrap.dedent(
    """
    import json, sys
    from webob import Request
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.middleware import FileProcessor

    root, url = sys.argv[1:3]
    config = Config(
        database_url=f"sqlite:///{root}/fileproc.db",
        source_roots={"default": f"{root}/media"},
        storage=f"{root}/results",
    )
    app = FileProcessor(None, config)
    response = Request.blank(url).get_response(app)
    app.close()
    answer = {"status": response.status_int, "retry_after": response.headers.get("Retry-After")}
    print(json.dumps({**answer, "text": response.text}))
    """
)


def test_a_library_missing_on_one_host_is_retried_and_made_where_it_is_installed(make_site, tmp_path):
    site = make_site()
    Image.new("RGB", (80, 60), "blue").save(site.media / "doc.pdf")
    registered = site.registrar.register("doc.pdf | fit 40x")  # a host with pypdfium2 registered it
    shadow = tmp_path / "shadow" / "pypdfium2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'pypdfium2'\")\n")
    paths = [str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    done = subprocess.run(
        [sys.executable, "-c", _HOST_WITHOUT_PDFIUM, str(site.root), registered.url],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert (answer["status"], answer["retry_after"]) == (503, "30"), answer
    assert "'doc.pdf' is a PDF file, and this server lacks the library to read it" in answer["text"]
    assert "pip install 'fileproc-wsgi[pdf]'" in answer["text"]
    job = site.store.get(registered.checksum)
    assert (job.state, job.failure_status, job.attempts) == ("failed", 503, 1), (
        "recorded for retry, not for good"
    )
    assert 0 < job.retry_at - site.store.now() <= 30

    # Until the retry time every host answers with the same wait, never a 422.
    waiting = site.get(registered.url)
    assert waiting.status_int == 503 and 0 < int(waiting.headers["Retry-After"]) <= 30

    # The retry time passes (no `fileproc retry`): a host with the library makes it.
    from fileproc_wsgi.middleware import FileProcessor
    from fileproc_wsgi.store import InstructionStore

    later = InstructionStore(site.config.database_url, clock=lambda: time.time() + 31)
    try:
        app = FileProcessor(None, site.config, store=later)
        from webob import Request

        redirect = Request.blank(registered.url).get_response(app)
        assert redirect.status_int == 301, redirect.text
        result = Request.blank(redirect.location).get_response(app)
        assert result.status_int == 200
        image = decode(result.body)
        assert image.size == (40, 30)
        assert image.convert("RGB").getpixel((20, 15))[2] > 200  # the blue page
    finally:
        later.dispose()
