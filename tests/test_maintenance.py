"""The maintenance commands (warm, gc, stats, purge) on a store of 10,000+ rows, and the
middleware's batched last-access recording."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from webob import Request

from fileproc_wsgi import access, maintenance
from fileproc_wsgi.config import Config
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.registrar import Registrar
from fileproc_wsgi.storage import open_storage
from fileproc_wsgi.store import InstructionStore, jobs
from support import halves, write

FILEPROC = [sys.executable, "-m", "fileproc_wsgi.cli"]
ROWS = 10_000
DAY = 86400.0


@pytest.fixture
def site(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        write(media, name, halves(60, 40))
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("FILEPROC_")},
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}",
        "FILEPROC_STORAGE": str(tmp_path / "results"),
    }
    config = Config.from_env(env)
    store = InstructionStore(config.database_url)
    storage = open_storage(config)
    yield env, config, store, storage
    store.dispose()


def _bulk(store: InstructionStore, *, old: float) -> None:
    """10,000 rows: half done long ago, a quarter failed in four reasons, a quarter pending."""
    store.add_many(
        {
            "checksum": f"{n:032x}",
            "instructions": f"x{n}.png",
            "source": f"x{n % 100}.png",
            "output_format": "png",
        }
        for n in range(ROWS)
    )
    with store.engine.begin() as connection:
        connection.execute(
            jobs.update()
            .where(jobs.c.checksum < f"{ROWS // 2:032x}")
            .values(
                state="done",
                completed_at=old,
                result_key=sa.func.substr(jobs.c.checksum, 1, 2) + "/" + jobs.c.checksum + ".png",
                result_bytes=1000,
            )
        )
        connection.execute(
            jobs.update()
            .where(jobs.c.checksum >= f"{ROWS // 2:032x}", jobs.c.checksum < f"{3 * ROWS // 4:032x}")
            .values(state="failed", reason="reason " + sa.func.substr(jobs.c.checksum, 32, 1), retry_at=None)
        )


def _register(config, store, *texts):
    registrar = Registrar(config, store=store)
    return [registrar.register(text) for text in texts]


def _run(env, *arguments):
    return subprocess.run([*FILEPROC, *arguments], env=env, capture_output=True, text=True, timeout=120)


def test_warm_makes_pending_jobs_and_is_resumable(site):
    env, config, store, storage = site
    made = _register(config, store, "a.png | fit 30x20", "b.png | fit 30x20")
    report = maintenance.warm(config, store, storage, workers=2)
    assert (report.total, report.done, report.failed) == (2, 2, 0)
    for representation in made:
        job = store.get(representation.checksum)
        assert job.state == "done" and storage.exists(job.result_key)
    # Run again with one more: only what is still pending is made.
    (late,) = _register(config, store, "c.png | fit 30x20")
    shown = []
    report = maintenance.warm(config, store, storage, workers=3, progress=shown.append)
    assert (report.total, report.done) == (1, 1)
    assert store.get(late.checksum).state == "done" and shown
    assert maintenance.warm(config, store, storage).total == 0


def test_warm_on_the_command_line(site):
    env, config, store, storage = site
    (made,) = _register(config, store, "a.png | fit 30x20")
    done = _run(env, "warm", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "1 made, 0 failed" in done.stdout
    assert "warm: 1/1" in done.stderr
    assert store.get(made.checksum).state == "done"


def test_gc_stats_and_purge_on_ten_thousand_rows(site, capsys):
    env, config, store, storage = site
    now = store.now()
    fresh, stale, kept = _register(
        config, store, "a.png | fit 30x20", "b.png | fit 30x20", "c.png | fit 30x20"
    )
    maintenance.warm(config, store, storage)
    _bulk(store, old=now - 40 * DAY)
    with store.engine.begin() as connection:  # b was made long ago and not requested since
        connection.execute(
            jobs.update().where(jobs.c.checksum == stale.checksum).values(completed_at=now - 40 * DAY)
        )
        connection.execute(
            jobs.update().where(jobs.c.checksum == kept.checksum).values(completed_at=now - 40 * DAY)
        )
    store.touch([kept.checksum])  # ... but c was requested just now
    stale_key = store.get(stale.checksum).result_key
    # Orphans: a result file with no row, a crashed writer's temporary file; both old.
    storage.put("ab/" + "ab" * 16 + ".png", b"orphan")
    temporary = os.path.join(storage.directory, "ab", ".tmp-xyz.part")
    with open(temporary, "wb") as stream:
        stream.write(b"part")
    hour_ago = time.time() - 2 * 3600
    for path in (storage.path("ab/" + "ab" * 16 + ".png"), temporary):
        os.utime(path, (hour_ago, hour_ago))

    timings = {}
    started = time.perf_counter()
    dry = maintenance.gc(store, storage, days=30)
    timings["gc dry run"] = time.perf_counter() - started
    assert (dry.stale, dry.orphans, dry.temporary, dry.deleted) == (ROWS // 2 + 1, 1, 1, False)
    assert dry.stale_bytes >= ROWS // 2 * 1000 and dry.orphan_bytes == 6 and dry.temporary_bytes == 4
    assert storage.exists(stale_key) and os.path.exists(temporary)

    started = time.perf_counter()
    found = maintenance.stats(store)
    timings["stats"] = time.perf_counter() - started
    assert found["states"] == {"done": ROWS // 2 + 3, "failed": ROWS // 4, "pending": ROWS // 4}
    assert len(found["failures"]) == 10 and sum(count for _, count in found["failures"]) < ROWS // 4
    assert found["failures"][0][1] >= found["failures"][-1][1]
    assert found["oldest_pending"] is not None

    cli = {}
    for arguments in (("stats",), ("gc", "--days", "30")):
        started = time.perf_counter()
        done = _run(env, *arguments)
        cli[" ".join(arguments)] = time.perf_counter() - started
        assert done.returncode == 0, done.stderr
        cli[arguments[0] + " output"] = done.stdout
    assert f"{ROWS // 2 + 3} done, {ROWS // 4} failed" in cli["stats output"]
    assert "failures by reason:" in cli["stats output"]
    assert f"results not requested for 30 days: {ROWS // 2 + 1}" in cli["gc output"]
    assert "dry run" in cli["gc output"]

    started = time.perf_counter()
    deleted = _run(env, "gc", "--days", "30", "--delete")
    timings["gc --delete (command line)"] = time.perf_counter() - started
    assert deleted.returncode == 0, deleted.stderr and "deleted" in deleted.stdout
    job = store.get(stale.checksum)
    assert job.state == "pending" and job.result_key is None and not storage.exists(stale_key)
    assert store.get(fresh.checksum).state == "done" and store.get(kept.checksum).state == "done"
    assert not os.path.exists(temporary) and not storage.exists("ab/" + "ab" * 16 + ".png")
    assert store.count_by_state()["done"] == 2
    assert maintenance.gc(store, storage, days=30).stale == 0
    # The emptied row is not warmed ahead of time, but its URL makes it again when requested.
    assert all(job.checksum != stale.checksum for job in store.claimable(limit=ROWS))
    processor = FileProcessor(None, config, store=store, storage=storage)
    assert Request.blank(stale.url).get_response(processor).status_int in (301, 302, 303, 307, 308)
    assert store.get(stale.checksum).state == "done"

    # purge: every row of one source, with its result.
    (again,) = _register(config, store, "a.png | fit 10x10")
    processor.processor.ensure(store.get(again.checksum))
    keys = [store.get(c).result_key for c in (fresh.checksum, again.checksum)]
    purged = _run(env, "purge", "a.png")
    assert purged.returncode == 0, purged.stderr
    assert "a.png: 2 rows and 2 result files" in purged.stdout
    assert store.find(fresh.checksum) is None and store.find(again.checksum) is None
    assert not any(storage.exists(key) for key in keys)
    report = maintenance.purge(store, storage, "x7.png")
    assert report.rows == ROWS // 100

    with capsys.disabled():
        print(
            f"\n{ROWS} rows: "
            + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items())
        )
        print(
            "command line (incl. interpreter start): "
            + ", ".join(
                f"{name} {seconds * 1000:.0f} ms" for name, seconds in cli.items() if "output" not in name
            )
        )
    assert timings["gc dry run"] < 2 and timings["stats"] < 1


def test_redirects_record_last_access_in_batches(site):
    env, config, store, storage = site
    (made,) = _register(config, store, "a.png | fit 30x20")
    processor = FileProcessor(None, config, store=store, storage=storage)
    for _ in range(3):
        assert Request.blank(made.url).get_response(processor).status_int == 301
    assert store.get(made.checksum).accessed_at is None  # nothing written per request
    assert processor.flush_access() == 1
    first = store.get(made.checksum).accessed_at
    assert first is not None
    assert processor.flush_access() == 0  # nothing requested since


def test_the_flusher_thread_writes_by_itself(site, monkeypatch):
    env, config, store, storage = site
    (made,) = _register(config, store, "a.png | fit 30x20")
    processor = FileProcessor(None, config, store=store, storage=storage)
    processor.access_flush_seconds = 0.1
    monkeypatch.setattr(type(processor).__mro__[0], "access_flush_seconds", 0.1)
    monkeypatch.setattr(access.AccessFlusher, "tick", 0.05)
    assert Request.blank(made.url).get_response(processor).status_int == 301
    deadline = time.monotonic() + 10
    while store.get(made.checksum).accessed_at is None:
        assert time.monotonic() < deadline, "the flusher thread never wrote"
        time.sleep(0.05)
