"""InstructionStore on SQLite and on a real PostgreSQL: registration, claims, fencing, listing."""

from __future__ import annotations

import socket
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from fileproc_wsgi.errors import ConfigError, LeaseLostError, NotRegisteredError, UnavailableError
from fileproc_wsgi.store import InstructionStore, Job

LEASE = 60.0


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url, clock):
    store = InstructionStore(database_url, clock=clock)
    yield store
    store.dispose()


def checksum(n: int) -> str:
    return f"{n:064x}"


def register(store: InstructionStore, key: str, **overrides) -> bool:
    values = {"source": "photos/a.jpg", "output_format": "webp", "width": 400, "height": 300}
    values.update(overrides)
    return store.add(key, f"photos/a.jpg\nfill 400x300 # {key}", **values)


def finish(store: InstructionStore, key: str, token: int, **overrides) -> None:
    values = {
        "result_key": f"{key}.webp",
        "content_type": "image/webp",
        "width": 400,
        "height": 267,
        "result_bytes": 1234,
    }
    values.update(overrides)
    store.complete(key, token, **values)


def test_add_is_idempotent(store, clock):
    key = checksum(1)
    assert register(store, key) is True
    first = store.get(key)
    clock.advance(10)
    assert register(store, key, source="other.jpg", width=1) is False
    assert store.get(key) == first
    assert first == Job(
        checksum=key,
        instructions=f"photos/a.jpg\nfill 400x300 # {key}",
        source="photos/a.jpg",
        output_format="webp",
        width=400,
        height=300,
        state="pending",
        token=0,
        lease_until=None,
        attempts=0,
        reason=None,
        failure_status=None,
        retry_at=None,
        result_key=None,
        content_type=None,
        result_bytes=None,
        created_at=clock.now - 10,
        completed_at=None,
        accessed_at=None,
    )


def test_add_many_uses_one_commit_and_one_statement(store):
    store.create_tables()
    register(store, checksum(0))
    commits, statements = [], []
    event.listen(store.engine, "commit", lambda connection: commits.append(1))
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    rows = [
        {
            "checksum": checksum(n),
            "instructions": f"a.jpg | fit {n}x",
            "source": "a.jpg",
            "output_format": "jpeg",
            "width": n,
            "height": None,
        }
        for n in range(100)
    ]

    assert store.add_many(rows + rows[:3]) == 99

    assert len(commits) == 1
    assert len(statements) == 1
    assert store.count_by_state()["pending"] == 100
    assert store.get(checksum(42)).width == 42


def test_add_many_beyond_one_statement_keeps_every_row_and_counts_only_new_ones(store, clock):
    # 1201 rows are three INSERTs (500 rows, 5000 parameters each at most), one transaction.
    register(store, checksum(700))
    commits = []
    event.listen(store.engine, "commit", lambda connection: commits.append(1))
    rows = [
        {
            "checksum": checksum(n),
            "instructions": f"a.jpg | fit {n + 1}x",
            "source": "a.jpg",
            "output_format": "jpeg",
            "width": n + 1,
            "height": None if n % 2 else n,
        }
        for n in range(1201)
    ]

    assert store.add_many(rows) == 1200

    assert len(commits) == 1
    assert store.count_by_state() == {"pending": 1201}
    last = store.get(checksum(1200))
    assert (last.width, last.height, last.token, last.attempts, last.created_at) == (
        1201,
        1200,
        0,
        0,
        clock.now,
    )
    assert store.get(checksum(1199)).height is None


def test_add_many_of_nothing_touches_nothing(store):
    assert store.add_many([]) == 0


def test_get_raises_and_find_returns_none(store):
    key = checksum(7)
    assert store.find(key) is None
    with pytest.raises(NotRegisteredError, match=key):
        store.get(key)


def test_claim_once_then_none_for_a_second_claimer(store):
    key = checksum(1)
    register(store, key)
    assert store.claim(key, lease=LEASE) == 1
    assert store.claim(key, lease=LEASE) is None
    job = store.get(key)
    assert (job.state, job.token, job.attempts, job.lease_until) == ("working", 1, 1, job.created_at + LEASE)


def test_claim_of_an_unknown_checksum_is_none(store):
    assert store.claim(checksum(99), lease=LEASE) is None


def test_expired_lease_passes_to_a_second_worker_and_fences_out_the_first(store, clock):
    key = checksum(1)
    register(store, key)
    first = store.claim(key, lease=LEASE)
    clock.advance(LEASE - 1)
    assert store.claim(key, lease=LEASE) is None
    clock.advance(2)
    second = store.claim(key, lease=LEASE)
    assert second == first + 1

    with pytest.raises(LeaseLostError):
        finish(store, key, first)
    finish(store, key, second)

    job = store.get(key)
    assert (job.state, job.width, job.height, job.result_key, job.result_bytes) == (
        "done",
        400,
        267,
        f"{key}.webp",
        1234,
    )
    assert (job.completed_at, job.lease_until, job.attempts) == (clock.now, None, 2)
    assert store.claim(key, lease=LEASE) is None


@pytest.mark.parametrize(
    "verdict",
    [
        pytest.param(lambda s, k, t: s.fail(k, t, "late", retry_at=None), id="fail"),
        pytest.param(lambda s, k, t: s.release(k, t), id="release"),
        pytest.param(lambda s, k, t: finish(s, k, t), id="complete"),
    ],
)
def test_a_stale_token_cannot_give_a_verdict(store, verdict):
    key = checksum(1)
    register(store, key)
    token = store.claim(key, lease=LEASE)
    with pytest.raises(LeaseLostError):
        verdict(store, key, token + 1)
    with pytest.raises(LeaseLostError):
        verdict(store, checksum(2), token)
    assert store.get(key).state == "working"


def test_failure_with_retry_at_is_claimable_only_once_it_has_come(store, clock):
    key = checksum(1)
    register(store, key)
    token = store.claim(key, lease=LEASE)
    store.fail(key, token, "storage timed out", retry_at=clock.now + 30)
    job = store.get(key)
    assert (job.state, job.reason, job.retry_at, job.lease_until) == (
        "failed",
        "storage timed out",
        clock.now + 30,
        None,
    )

    clock.advance(29)
    assert store.claim(key, lease=LEASE) is None
    clock.advance(1)
    assert store.claim(key, lease=LEASE) == token + 1


def test_permanent_failure_is_never_claimed_until_reset(store, clock):
    key, other = checksum(1), checksum(2)
    register(store, key)
    register(store, other)
    store.fail(key, store.claim(key, lease=LEASE), "source not found", retry_at=None, status=404)
    assert (store.get(key).reason, store.get(key).failure_status) == ("source not found", 404)
    clock.advance(10 * 365 * 86400)
    assert store.claim(key, lease=LEASE) is None
    assert store.claim(key, lease=LEASE, redo=True) is None

    assert store.reset([other]) == 0
    assert store.reset([key]) == 1
    job = store.get(key)
    assert (job.state, job.reason, job.failure_status, job.retry_at, job.attempts) == (
        "pending",
        None,
        None,
        None,
        0,
    )
    assert store.claim(key, lease=LEASE) == 2


def test_reset_everything_in_the_given_states(store):
    keys = [checksum(n) for n in range(3)]
    for key in keys:
        register(store, key)
    store.fail(keys[0], store.claim(keys[0], lease=LEASE), "bad", retry_at=None)
    store.claim(keys[1], lease=LEASE)

    assert store.reset() == 1
    assert store.reset(states=("working",)) == 1
    assert store.count_by_state() == {"pending": 3}


def test_redo_claims_a_done_job(store):
    key = checksum(1)
    register(store, key)
    finish(store, key, store.claim(key, lease=LEASE))
    assert store.claim(key, lease=LEASE) is None
    assert store.claim(key, lease=LEASE, redo=True) == 2
    assert store.get(key).state == "working"


def test_release_returns_the_job_to_pending(store):
    key = checksum(1)
    register(store, key)
    token = store.claim(key, lease=LEASE)
    store.release(key, token)
    assert (store.get(key).state, store.get(key).lease_until) == ("pending", None)
    assert store.claim(key, lease=LEASE) == token + 1


@pytest.fixture
def listed(store):
    for n in range(10):
        register(store, checksum(n))
    for n in (2, 5, 7):
        finish(store, checksum(n), store.claim(checksum(n), lease=LEASE))
    return store


@pytest.mark.parametrize(
    "state, after, limit, expected",
    [
        pytest.param(None, None, 100, list(range(10)), id="all"),
        pytest.param(None, None, 4, [0, 1, 2, 3], id="first-page"),
        pytest.param(None, checksum(3), 4, [4, 5, 6, 7], id="second-page"),
        pytest.param(None, checksum(7), 4, [8, 9], id="last-page"),
        pytest.param(None, checksum(9), 4, [], id="past-the-end"),
        pytest.param("done", None, 100, [2, 5, 7], id="state"),
        pytest.param("done", checksum(2), 1, [5], id="state-and-page"),
        pytest.param("failed", None, 100, [], id="empty-state"),
    ],
)
def test_list(listed, state, after, limit, expected):
    assert [job.checksum for job in listed.list(state=state, after=after, limit=limit)] == [
        checksum(n) for n in expected
    ]


def test_list_pages_through_everything(listed):
    seen, after = [], None
    while page := listed.list(after=after, limit=3):
        seen += [job.checksum for job in page]
        after = page[-1].checksum
    assert seen == [checksum(n) for n in range(10)]


def test_count_by_state(listed):
    listed.fail(checksum(0), listed.claim(checksum(0), lease=LEASE), "bad", retry_at=None)
    listed.claim(checksum(1), lease=LEASE)
    assert listed.count_by_state() == {"pending": 5, "working": 1, "done": 3, "failed": 1}


def test_count_by_state_of_an_empty_store(store):
    assert store.count_by_state() == {}


def test_touch(store, clock):
    keys = [checksum(n) for n in range(3)]
    for key in keys:
        register(store, key)
    clock.advance(100)
    store.touch(iter(keys[:2]))
    store.touch([])
    assert [store.get(key).accessed_at for key in keys] == [clock.now, clock.now, None]


def test_concurrent_claims_have_exactly_one_winner(store):
    key = checksum(1)
    register(store, key)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def claim() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(store.claim(key, lease=LEASE))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert sorted(results, key=lambda token: token is not None) == [None] * 7 + [1]


def test_tables_are_created_once_on_first_use(database_url, clock):
    first = InstructionStore(database_url, clock=clock)
    second = InstructionStore(database_url, clock=clock)
    try:
        assert register(first, checksum(1))
        assert second.get(checksum(1)).state == "pending"
    finally:
        first.dispose()
        second.dispose()


def test_sqlite_database_directory_is_created_and_wal_is_on(tmp_path, clock):
    store = InstructionStore(f"sqlite:///{tmp_path / 'a' / 'b' / 'fp.db'}", clock=clock)
    try:
        assert store.find(checksum(1)) is None
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    finally:
        store.dispose()


def test_from_engine(database_url, clock):
    engine = sa.create_engine(database_url)
    store = InstructionStore.from_engine(engine, clock=clock)
    try:
        assert register(store, checksum(1))
        assert store.get(checksum(1)).created_at == clock.now
    finally:
        store.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_database_is_unavailable(database_url, tmp_path):
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        broken = f"sqlite:///{tmp_path}"  # a directory cannot be opened as a database
    else:
        broken = url.set(port=_closed_port(), password="s3cret-pw").render_as_string(hide_password=False)
    store = InstructionStore(broken)
    try:
        with pytest.raises(UnavailableError, match="^database unavailable: ") as caught:
            store.find(checksum(1))
        assert "\n" not in str(caught.value)
        assert "s3cret-pw" not in str(caught.value)
        assert caught.value.__cause__ is None
    finally:
        store.dispose()


# --------------------------------------------------------------------------- find_store


def test_find_store_makes_nothing_where_no_store_was_made(database_url, tmp_path):
    from fileproc_wsgi.store import find_store

    assert find_store(database_url) is None
    engine = sa.create_engine(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_find_store_opens_a_store_once_made(database_url):
    from fileproc_wsgi.store import find_store, upgrade

    upgrade(database_url)
    store = find_store(database_url)
    try:
        assert store is not None
        assert register(store, checksum(1))
        assert store.count_by_state() == {"pending": 1}
    finally:
        store.dispose()


def test_find_store_leaves_a_missing_or_foreign_sqlite_file_as_it_was(tmp_path):
    import sqlite3

    from fileproc_wsgi.store import find_store

    assert find_store(f"sqlite:///{tmp_path / 'nowhere' / 'fileproc.db'}") is None
    assert list(tmp_path.iterdir()) == []
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE photos (id INTEGER)")
    connection.close()
    before = foreign.read_bytes()
    assert find_store(f"sqlite:///{foreign}") is None
    assert foreign.read_bytes() == before, "its journal mode was switched or a table added"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.db"]


def test_a_sqlite_without_returning_is_refused_when_the_store_is_made(tmp_path, monkeypatch):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fp.db'}")
    monkeypatch.setattr(engine.dialect.dbapi, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(engine.dialect.dbapi, "sqlite_version", "3.31.1")
    with pytest.raises(ConfigError, match=r"SQLite 3.35 or later is needed, this Python's is 3.31.1"):
        InstructionStore.from_engine(engine)
    engine.dispose()
