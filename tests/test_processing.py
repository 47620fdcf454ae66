"""A worker that stalled past its lease stores nothing over the worker that took over."""

from __future__ import annotations

import time

from support import halves, write


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
