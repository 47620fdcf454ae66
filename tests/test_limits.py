"""The limits by default, and what a failure leaves on record.

Every limit is checked twice where it can be: at registration, when the instructions and
the source's header already tell (the template gets the error, no row is written), and
when processing (a limit lowered after registration, a source replaced since). A refused
job answers with its status and a one-line reason, is recorded as failed for good, is not
tried again by the next request, and leaves nothing in storage; running out of
``max_processing_seconds`` is the exception, retried with backoff twice first. Beyond
``max_concurrent_jobs`` a request that would start a job is answered ``503`` at once,
while requests for a result already being made wait for it. Transient failures back off.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from PIL import GifImagePlugin, Image, TiffImagePlugin

from fileproc_wsgi import processing
from fileproc_wsgi.config import Config
from fileproc_wsgi.engines import raster
from fileproc_wsgi.errors import ConfigError, LimitError, UnavailableError
from fileproc_wsgi.formats import CONTENT_TYPES, EXTENSIONS
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.operations import Blur
from fileproc_wsgi.processing import Processor
from fileproc_wsgi.storage import result_key
from fileproc_wsgi.store import InstructionStore
from support import halves, write


def _frames(count: int, size=(8, 8)) -> list[Image.Image]:
    # Alternating colours: Pillow's GIF writer merges identical neighbouring frames.
    return [Image.new("RGB", size, (255, 0, 0) if n % 2 else (0, 0, 255)) for n in range(count)]


def _animation(directory, name: str, count: int, **params) -> None:
    first, *rest = _frames(count)
    write(directory, name, first, save_all=True, append_images=rest, **params)


def _stored_files(site) -> list[str]:
    results = site.root / "results"
    return sorted(str(path.relative_to(results)) for path in results.rglob("*") if path.is_file())


class _Clock:
    """A store clock the test moves by hand."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _served_with(site, **settings) -> FileProcessor:
    """The same installation (database, storage, sources) answered under other settings."""
    return FileProcessor(None, dataclasses.replace(site.config, **settings), store=site.store)


def _get(app, path: str):
    from webob import Request

    response = Request.blank(path).get_response(app)
    response.body  # noqa: B018 - read it all, as a server would
    return response


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"max_concurrent_jobs": 0},
            "max_concurrent_jobs: expected a positive whole number",
            id="jobs-zero",
        ),
        pytest.param(
            {"max_concurrent_jobs": 2.5},
            "max_concurrent_jobs: expected a positive whole number",
            id="jobs-float",
        ),
        pytest.param({"max_output_side": -1}, "max_output_side: expected a positive", id="side-negative"),
        pytest.param({"max_source_frames": 0}, "max_source_frames: expected a positive", id="frames-zero"),
        pytest.param(
            {"max_processing_seconds": 0}, "max_processing_seconds: expected seconds", id="seconds-zero"
        ),
        pytest.param(
            {"max_processing_seconds": 60},
            "max_processing_seconds: must be shorter than lease_seconds (60)",
            id="seconds-equal-to-lease",
        ),
        pytest.param(
            {"lease_seconds": 10},
            "max_processing_seconds: must be shorter than lease_seconds (10), so that a worker "
            "finishes inside its lease; got 30",
            id="lease-shorter-than-default-seconds",
        ),
    ],
)
def test_bad_limit_settings_name_the_setting(settings, message):
    with pytest.raises(ConfigError) as raised:
        Config(**settings)
    assert message in str(raised.value)


def test_limits_come_from_the_environment_and_a_mapping():
    environ = {
        "FILEPROC_MAX_CONCURRENT_JOBS": "3",
        "FILEPROC_MAX_PROCESSING_SECONDS": "2.5",
        "FILEPROC_LEASE_SECONDS": "5",
        "FILEPROC_MAX_OUTPUT_SIDE": "4096",
        "FILEPROC_MAX_SOURCE_FRAMES": "50",
    }
    config = Config.from_env(environ)
    limits = (
        config.max_concurrent_jobs,
        config.max_processing_seconds,
        config.max_output_side,
        config.max_source_frames,
    )
    assert limits == (3, 2.5, 4096, 50)
    assert Config.from_mapping({"MAX_OUTPUT_SIDE": 4096, "max_concurrent_jobs": 3}).max_output_side == 4096


def test_defaults():
    config = Config()
    assert (config.max_concurrent_jobs, config.max_processing_seconds, config.lease_seconds) == (
        8,
        30.0,
        60.0,
    )
    assert (config.max_output_side, config.max_source_frames) == (8192, 1000)


# --------------------------------------------------------------------------- refused at registration


@pytest.mark.parametrize(
    ("settings", "text", "message"),
    [
        pytest.param(
            {"max_source_bytes": 100},
            "photo.png | fit 10x",
            "bytes, more than max_source_bytes=100",
            id="source-bytes",
        ),
        pytest.param(
            {"max_output_pixels": 5_000},
            "photo.png | upscale | fit 1000x",
            "the result would have 1000x500 pixels, more than max_output_pixels=5000",
            id="output-pixels",
        ),
        pytest.param(
            {},
            "photo.png | upscale | resize 9000x2000",
            "the result would be 9000x2000, a side longer than max_output_side=8192",
            id="output-side",
        ),
        pytest.param(
            {},
            "photo.png | upscale | resize 16000x20",
            "the result would be 16000x20, a side longer than max_output_side=8192",
            id="output-side-of-a-thin-strip",
        ),
        pytest.param(
            {"max_source_frames": 3},
            "anim.gif | page 4",
            "page 4 is beyond max_source_frames=3: no page or frame further into a source is read",
            id="page-beyond-max-source-frames",
        ),
        pytest.param(
            {},
            "anim.gif | page 1001",
            "page 1001 is beyond max_source_frames=1000",
            id="page-beyond-the-default",
        ),
    ],
)
def test_a_result_over_a_limit_is_refused_at_registration(make_site, settings, text, message):
    site = make_site(**settings)
    write(site.media, "photo.png", halves(200, 100))
    _animation(site.media, "anim.gif", 5)
    with pytest.raises(LimitError) as refused:
        site.registrar.register(text)
    assert message in str(refused.value)
    assert site.store.count_by_state() == {}, "nothing registered"
    assert _stored_files(site) == []


# --------------------------------------------------------------------------- refused when processing


def _replace_with_a_wide_png(site) -> None:
    write(site.media, "photo.png", Image.new("RGB", (9000, 10)))


@pytest.mark.parametrize(
    ("text", "settings", "after_registration", "message"),
    [
        pytest.param(
            "photo.png | fit 10x",
            {"max_source_bytes": 100},
            None,
            "bytes, more than max_source_bytes=100",
            id="source-bytes",
        ),
        pytest.param(
            "photo.png | fit 10x",
            {"max_source_pixels": 10_000},
            None,
            "'photo.png' has 200x100 = 20000 pixels, more than max_source_pixels=10000",
            id="source-pixels-from-the-header",
        ),
        pytest.param(
            "photo.png",
            {"max_output_pixels": 5_000},
            None,
            "the result would have 200x100 pixels, more than max_output_pixels=5000",
            id="output-pixels-lowered-since",
        ),
        pytest.param(
            "photo.png",
            {"max_output_side": 150},
            None,
            "the result would be 200x100, a side longer than max_output_side=150",
            id="output-side-lowered-since",
        ),
        pytest.param(
            "photo.png | rotate 0",
            {},
            _replace_with_a_wide_png,
            "the result would be 9000x10, a side longer than max_output_side=8192",
            id="output-side-of-a-replaced-source",
        ),
        pytest.param(
            "anim.gif | page 3",
            {"max_source_frames": 2},
            None,
            "page 3 is beyond max_source_frames=2",
            id="page-beyond-max-source-frames",
        ),
        pytest.param(
            "anim.webp | page 2",
            {"max_source_frames": 3},
            None,
            "'anim.webp' has 5 frames, more than max_source_frames=3",
            id="webp-declaring-more-frames",
        ),
        pytest.param(
            "anim.png | page 2",
            {"max_source_frames": 3},
            None,
            "'anim.png' has 5 frames, more than max_source_frames=3",
            id="apng-declaring-more-frames",
        ),
        pytest.param(
            "anim.gif | page 7",
            {},
            None,
            "page 7: 'anim.gif' has only 5 page(s)",
            id="gif-page-beyond-the-last",
        ),
    ],
)
def test_a_job_over_a_limit_fails_for_good_and_leaves_nothing(
    site, text, settings, after_registration, message
):
    write(site.media, "photo.png", halves(200, 100))
    _animation(site.media, "anim.gif", 5)
    _animation(site.media, "anim.webp", 5, lossless=True)
    _animation(site.media, "anim.png", 5)
    representation = site.registrar.register(text)
    if after_registration:
        after_registration(site)
    app = _served_with(site, **settings)

    response = _get(app, representation.url)
    assert response.status_int == 422
    assert message in response.text and response.text.count("\n") == 1
    assert response.headers["Cache-Control"] == "no-store"
    assert "Retry-After" not in response.headers
    job = site.store.get(representation.checksum)
    assert (job.state, job.failure_status, job.retry_at, job.attempts) == ("failed", 422, None, 1)
    assert message in job.reason

    again = _get(app, representation.url)
    assert (again.status_int, again.text) == (response.status_int, response.text)
    assert site.store.get(representation.checksum).attempts == 1, "a permanent failure is not tried again"
    assert _stored_files(site) == []


# --------------------------------------------------------------------------- frame bombs


@pytest.mark.in_process
def test_a_frame_bomb_is_never_counted(site, monkeypatch):
    # GIF and TIFF count their frames by walking the whole file; a page is reached by
    # walking only the frames before it, so a file of thousands of frames costs a few.
    for plugin in (GifImagePlugin.GifImageFile, TiffImagePlugin.TiffImageFile):
        counted = plugin.n_frames

        def walked(image, counted=counted):
            # Pillow keeps the count once a seek has reached the end; asking then walks nothing.
            assert image._n_frames is not None, "n_frames walked the whole file"
            return counted.fget(image)

        monkeypatch.setattr(plugin, "n_frames", property(walked))
    _animation(site.media, "bomb.gif", 3000)
    frames = [Image.new("L", (10 + n, 10)) for n in range(3)]
    write(site.media, "pages.tiff", frames[0], save_all=True, append_images=frames[1:])

    representation, image = site.make("bomb.gif | page 2 | format png")
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    _, page = site.make("pages.tiff | page 3 | format png")
    assert page.size == (12, 10)
    beyond = site.request("pages.tiff | page 4")
    assert (beyond.status_int, beyond.text) == (422, "page 4: 'pages.tiff' has only 3 page(s)\n")


def test_a_later_page_larger_than_the_source_pixel_limit_is_refused(make_site):
    site = make_site(max_source_pixels=10_000)
    frames = [Image.new("L", (10, 10)), Image.new("L", (200, 100))]
    write(site.media, "pages.tiff", frames[0], save_all=True, append_images=frames[1:])
    with pytest.raises(LimitError) as refused:  # the page's header says so: no URL is printed
        site.registrar.register("pages.tiff | page 2 | fit 10x")
    assert "page 2 of 'pages.tiff' has 200x100 = 20000 pixels, more than max_source_pixels=10000" in str(
        refused.value
    )


# --------------------------------------------------------------------------- processing time


def _slow(seconds: float, function):
    def slowed(*args, **kwargs):
        time.sleep(seconds)
        return function(*args, **kwargs)

    return slowed


@pytest.mark.in_process
@pytest.mark.parametrize(
    ("target", "name", "stage"),
    [
        pytest.param(processing.engines, "decode", "decoding", id="decoding"),
        pytest.param(Blur, "apply", "step 'blur'", id="an-operation"),
        pytest.param(processing, "encode", "encoding", id="encoding"),
    ],
)
def test_a_job_past_max_processing_seconds_is_stopped_between_stages(
    make_site, monkeypatch, target, name, stage
):
    site = make_site(max_processing_seconds=0.2)
    write(site.media, "photo.png", halves(200, 100))
    representation = site.registrar.register("photo.png | blur 1 | fit 50x")
    monkeypatch.setattr(target, name, _slow(0.3, getattr(target, name)))

    started = time.monotonic()
    response = site.get(representation.url)
    assert time.monotonic() - started < 5
    # A busy machine can make any job late: the first overruns are retried, with backoff.
    assert response.status_int == 503
    assert (
        response.text == f"processing took longer than max_processing_seconds=0.2 (stopped after {stage})\n"
    )
    assert (response.headers["Retry-After"], response.headers["Cache-Control"]) == ("30", "no-store")
    job = site.store.get(representation.checksum)
    assert (job.state, job.failure_status, job.attempts, job.lease_until) == ("failed", 503, 1, None)
    assert 29 < job.retry_at - time.time() <= 30
    assert _stored_files(site) == []


@pytest.mark.in_process
def test_a_job_that_keeps_running_out_of_time_fails_for_good_on_its_third_attempt(site, monkeypatch):
    clock = _Clock()
    store = InstructionStore(site.config.database_url, clock=clock)
    app = FileProcessor(None, dataclasses.replace(site.config, max_processing_seconds=0.1), store=store)
    write(site.media, "photo.png", halves(200, 100))
    representation = site.registrar.register("photo.png | blur 1")
    monkeypatch.setattr(Blur, "apply", _slow(0.2, Blur.apply))
    message = "processing took longer than max_processing_seconds=0.1 (stopped after step 'blur')\n"
    try:
        answers = []
        for _ in range(4):
            response = _get(app, representation.url)
            answers.append((response.status_int, response.headers.get("Retry-After"), response.text))
            job = store.get(representation.checksum)
            clock.now = job.retry_at or clock.now
        assert answers == [
            (503, "30", message),
            (503, "60", message),
            (422, None, message),
            (422, None, message),
        ]
        job = store.get(representation.checksum)
        assert (job.state, job.attempts, job.retry_at, job.failure_status) == ("failed", 3, None, 422)
        assert _stored_files(site) == []
    finally:
        store.dispose()


@pytest.mark.in_process
def test_video_decoding_is_bounded_by_max_processing_seconds(make_site, monkeypatch):
    from fileproc_wsgi.engines import video

    budgets = []
    frame_at = video._frame_at

    def spy(container, stream, target, reference, budget, **options):
        budgets.append(budget)
        return frame_at(container, stream, target, reference, budget, **options)

    monkeypatch.setattr(video, "_frame_at", spy)
    site = make_site(max_processing_seconds=4, lease_seconds=10)
    from fileproc_wsgi.samples import write_clip

    write_clip(str(site.media / "clip.mp4"), width=160, height=90, seconds=1)
    site.make("clip.mp4 | fit 40x | format png")
    assert budgets == [4]


# --------------------------------------------------------------------------- concurrent jobs


class _Blocking:
    """Processor.make that holds one checksum's job until released."""

    def __init__(self, monkeypatch, checksum: str):
        self.checksum = checksum
        self.started = threading.Event()
        self.release = threading.Event()
        make = Processor.make

        def blocking(processor, job, **options):
            if job.checksum == checksum:
                self.started.set()
                assert self.release.wait(30)
            return make(processor, job, **options)

        monkeypatch.setattr(Processor, "make", blocking)


def _in_thread(function, answers: list):
    thread = threading.Thread(target=lambda: answers.append(function()))
    thread.start()
    return thread


def _one_slot_and_two_jobs(make_site, monkeypatch, **settings):
    """A site with one job slot, two registered jobs, and the first one's making blocked."""
    site = make_site(max_concurrent_jobs=1, **settings)
    write(site.media, "a.png", halves(60, 40))
    write(site.media, "b.png", halves(60, 40))
    slow = site.registrar.register("a.png | fit 20x")
    other = site.registrar.register("b.png | fit 20x")
    return site, slow, other, _Blocking(monkeypatch, slow.checksum)


def test_beyond_max_concurrent_jobs_a_new_job_is_refused_at_once(make_site, monkeypatch):
    site, slow, other, blocking = _one_slot_and_two_jobs(make_site, monkeypatch, retry_after=7)

    answers: list = []
    first = _in_thread(lambda: site.get(slow.url), answers)
    assert blocking.started.wait(10)
    second = _in_thread(lambda: site.get(slow.url), answers)  # the same result: waits for it

    started = time.monotonic()
    refused = site.get(other.url)
    assert time.monotonic() - started < 1, "answered at once, not queued"
    assert refused.status_int == 503
    assert refused.headers["Retry-After"] == "7"
    assert refused.headers["Cache-Control"] == "no-store"
    assert (
        refused.text
        == "this server is busy making other results (max_concurrent_jobs=1); ask again shortly\n"
    )
    job = site.store.get(other.checksum)
    assert (job.state, job.attempts, job.token) == ("pending", 0, 0), "refused before claiming"

    time.sleep(0.3)
    assert second.is_alive(), "a request for the result being made waits for it"
    blocking.release.set()
    first.join(30)
    second.join(30)
    assert [answer.status_int for answer in answers] == [301, 301]
    assert answers[0].location == answers[1].location
    assert site.store.get(slow.checksum).attempts == 1

    assert site.get(other.url).status_int == 301, "the slot is free again"
    assert _stored_files(site) == sorted(
        f"{checksum[:2]}/{checksum}.png" for checksum in (slow.checksum, other.checksum)
    )


def test_waiting_for_another_workers_claim_needs_no_slot(make_site, monkeypatch):
    site, slow, other, blocking = _one_slot_and_two_jobs(make_site, monkeypatch, wait_timeout=10)
    answers: list = []
    first = _in_thread(lambda: site.get(slow.url), answers)
    assert blocking.started.wait(10)

    # Another process claims b and finishes it a moment later.
    token = site.store.claim(other.checksum, lease=60)
    job = site.store.get(other.checksum)

    def other_worker():
        time.sleep(0.3)
        # What another process does with its claim: the processor's own make, store, complete.
        Processor(site.config, site.store, site.app.storage)._run(job, token)

    worker = threading.Thread(target=other_worker)
    worker.start()
    started = time.monotonic()
    response = site.get(other.url)
    assert 0.2 < time.monotonic() - started < 5
    assert response.status_int == 301, response.text
    worker.join(10)
    blocking.release.set()
    first.join(30)
    assert answers[0].status_int == 301


# --------------------------------------------------------------------------- failures on record


def test_transient_failures_back_off_exponentially_up_to_an_hour(site, monkeypatch):
    clock = _Clock()
    store = InstructionStore(site.config.database_url, clock=clock)
    app = FileProcessor(None, site.config, store=store)
    write(site.media, "photo.png", halves(40, 20))
    representation = site.registrar.register("photo.png | fit 20x")
    writes = []

    def full(key, data):
        writes.append(key)
        raise UnavailableError("result storage unavailable: cannot write (No space left on device)")

    monkeypatch.setattr(app.storage, "put", full)
    delays = []
    try:
        for attempt in range(1, 10):
            response = _get(app, representation.url)
            job = store.get(representation.checksum)
            delay = job.retry_at - clock.now
            delays.append(delay)
            assert response.status_int == 503
            assert response.text == "result storage unavailable: cannot write (No space left on device)\n"
            assert response.headers["Retry-After"] == str(round(delay))
            assert response.headers["Cache-Control"] == "no-store"
            assert (job.state, job.attempts, job.failure_status) == ("failed", attempt, 503)

            clock.now += delay - 1  # not yet: answered from the record, not tried again
            waiting = _get(app, representation.url)
            assert (waiting.status_int, waiting.headers["Retry-After"]) == (503, "1")
            assert len(writes) == attempt
            clock.now += 1
        assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]

        monkeypatch.undo()  # storage works again
        assert _get(app, representation.url).status_int == 301
        assert store.get(representation.checksum).state == "done"
    finally:
        store.dispose()


def test_a_permanent_failure_is_answered_from_the_record(site, monkeypatch):
    write(site.media, "photo.png", halves(40, 20))
    representation = site.registrar.register("photo.png | fit 20x")
    (site.media / "photo.png").unlink()
    first = site.get(representation.url)
    assert (first.status_int, first.text) == (404, "source 'photo.png' does not exist\n")
    claims = []
    claim = site.store.claim

    def counted(*args, **options):
        claims.append(args)
        return claim(*args, **options)

    monkeypatch.setattr(site.store, "claim", counted)
    for _ in range(3):
        again = site.get(representation.url)
        assert (again.status_int, again.text) == (404, first.text)
        assert "Retry-After" not in again.headers
    assert claims == [], "not claimed again"
    job = site.store.get(representation.checksum)
    assert (job.state, job.attempts, job.retry_at, job.failure_status) == ("failed", 1, None, 404)


def test_the_raster_engine_checks_the_predicted_size_before_decoding():
    # Registration is not the only line: a row registered elsewhere, or the benchmarks
    # calling the pipeline directly, meet the same limit before a pixel is decoded.
    import io

    from fileproc_wsgi.instructions import parse

    buffer = io.BytesIO()
    halves(200, 100).save(buffer, "PNG")
    config = Config(max_output_side=100)
    with pytest.raises(LimitError, match="a side longer than max_output_side=100"):
        buffer.seek(0)
        raster.decode(buffer, "PNG", "photo.png", parse("photo.png | fit 150x"), config)


@pytest.mark.in_process
def test_a_late_worker_answers_with_the_result_of_the_worker_that_took_over(site, monkeypatch):
    clock = _Clock()
    store = InstructionStore(site.config.database_url, clock=clock)
    app = FileProcessor(None, dataclasses.replace(site.config, max_processing_seconds=0.1), store=store)
    write(site.media, "photo.png", halves(40, 20))
    representation = site.registrar.register("photo.png | blur 1")
    apply = Blur.apply
    calls = []

    def stalled(operation, image):
        calls.append(operation)
        if len(calls) == 1:
            # Frozen past max_processing_seconds and past the lease: another worker takes over.
            time.sleep(0.2)
            clock.now += 61
            job = store.get(representation.checksum)
            token = store.claim(representation.checksum, lease=60)
            result = app.processor.make(job)
            key = result_key(job.checksum, EXTENSIONS[job.output_format])
            app.storage.put(key, result.data)
            store.complete(
                job.checksum,
                token,
                result_key=key,
                content_type=CONTENT_TYPES[job.output_format],
                width=result.width,
                height=result.height,
                result_bytes=len(result.data),
            )
        return apply(operation, image)

    monkeypatch.setattr(Blur, "apply", stalled)
    try:
        response = _get(app, representation.url)
        assert response.status_int == 301, response.text
        job = store.get(representation.checksum)
        assert (job.state, job.attempts, job.token, job.reason) == ("done", 2, 2, None)
        assert _stored_files(site) == [job.result_key]
    finally:
        store.dispose()


def test_registering_a_png_decodes_no_pixel(site, monkeypatch):
    # Pillow finds a PNG's EXIF by decoding the whole image when no eXIf chunk precedes the
    # pixels; a header read must not, or registering a page of large PNGs decodes them all.
    from PIL import PngImagePlugin

    loads = []
    load = PngImagePlugin.PngImageFile.load

    def counted(image):
        loads.append(image)
        return load(image)

    write(site.media, "photo.png", halves(200, 100))
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted)
    representation = site.registrar.register("photo.png | fit 50x")
    assert (representation.width, representation.height) == (50, 25)
    assert loads == [], "registration decoded the pixels"
