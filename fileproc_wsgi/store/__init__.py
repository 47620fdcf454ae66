"""The instruction store: one table of jobs, the same SQL on SQLite and PostgreSQL.

Each registered checksum is one row of ``fileproc_jobs`` holding its canonical
instructions and the state of its processing (``pending`` → ``working`` → ``done`` or
``failed``). Exactly-once processing across threads, processes and hosts comes from
:meth:`InstructionStore.claim`, a single conditional ``UPDATE`` that hands out a lease
and a fencing token; a worker's verdict (:meth:`~InstructionStore.complete`,
:meth:`~InstructionStore.fail`, :meth:`~InstructionStore.release`) only lands while its
token is still the current one.

SQLAlchemy Core on its own ``MetaData``: a host application's ORM is never touched. Times
are floats (unix seconds from an injectable clock) so comparisons behave the same on
both databases. An outage surfaces as :class:`~fileproc_wsgi.errors.UnavailableError`,
never as a SQLAlchemy exception. The tables are defined in :mod:`.schema`, and created and
upgraded by the Alembic revisions in :mod:`.migrations`.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeGuard
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigError, LeaseLostError, NotRegisteredError, UnavailableError
from .migrations import HEAD
from .schema import STATES, VERSION_TABLE, Job, generations, jobs, metadata

__all__ = [
    "STATES",
    "InstructionStore",
    "Job",
    "find_store",
    "generations",
    "jobs",
    "location",
    "metadata",
    "upgrade",
]

# What a client is told; the driver's own words (host, port, database) go in ``detail``.
_DATABASE_DOWN = "database unavailable: cannot reach it; ask again shortly"
_DATABASE_BUSY = "database unavailable: every connection is busy; ask again shortly"
# Well under SQLite's bound-parameter limit, so one IN (...) or VALUES list always fits.
_CHUNK = 500


class InstructionStore:
    """Registered instructions and their processing state, shared by every process.

    Every method is one short transaction. ``claim`` returns a fencing token or ``None``;
    ``complete``, ``fail`` and ``release`` raise :class:`LeaseLostError` when that token
    is no longer current (the lease expired and another worker claimed the job). A
    database that cannot be reached raises :class:`UnavailableError`. Tables are created
    (or migrated) on first use, see :mod:`fileproc_wsgi.store.migrations`.
    """

    def __init__(self, database_url: str, *, clock: Callable[[], float] = time.time):
        url = sa.make_url(database_url)
        connect_args: dict[str, Any] = {}
        options: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            _make_parent_directory(url.database)
        elif url.get_backend_name() == "postgresql":
            if "connect_timeout" not in url.query:
                # A host that drops packets would otherwise hang a request for minutes.
                connect_args["connect_timeout"] = 10
            if url.get_driver_name() in ("psycopg", "psycopg2"):
                # No column here is an hstore; looking its type up costs every new
                # connection a query (1.4 ms of a process's first registration, measured).
                options["use_native_hstore"] = False
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **options)
        self._setup(engine, clock)

    @classmethod
    def from_engine(cls, engine: Engine, *, clock: Callable[[], float] = time.time) -> InstructionStore:
        """Use an existing engine (its pool and settings are left as they are)."""
        store = cls.__new__(cls)
        store._setup(engine, clock)
        return store

    def _setup(self, engine: Engine, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock
        self._tables_ready = False
        self._tables_lock = threading.Lock()
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigError(f"database_url: expected SQLite or PostgreSQL, got {engine.dialect.name!r}")
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert_if_absent = (
            dialect.insert(jobs)
            .on_conflict_do_nothing(index_elements=["checksum"])
            .returning(jobs.c.checksum)
        )
        dbapi = engine.dialect.dbapi
        if engine.dialect.name == "sqlite" and dbapi is not None and dbapi.sqlite_version_info < (3, 35):
            # Registering needs INSERT ... RETURNING: said here, not as a syntax error on a page.
            raise ConfigError(
                f"database_url: SQLite 3.35 or later is needed, this Python's is "
                f"{dbapi.sqlite_version}; use a newer Python or PostgreSQL"
            )
        placeholder = _PLACEHOLDERS.get(engine.dialect.paramstyle)
        self._row_values = (
            None if placeholder is None else f"({', '.join([placeholder] * len(_INSERT_COLUMNS))})"
        )
        if engine.dialect.name == "sqlite" and not event.contains(engine, "connect", _sqlite_pragmas):
            event.listen(engine, "connect", _sqlite_pragmas)

    def now(self) -> float:
        """The store's clock: lease, retry and access times are all read from it."""
        return self._clock()

    def create_tables(self) -> None:
        """Bring the tables to the current schema if needed; runs once per store, thread-safe.

        The schema comes from the Alembic revisions in :mod:`fileproc_wsgi.store.migrations`
        (an old database without their version table is stamped, not recreated). In
        production run ``fileproc migrate`` before starting servers; this then only
        finds the database at head, with one query and without importing Alembic.
        """
        if not self._tables_ready:
            self._first_use()

    def _first_use(self) -> int | None:
        """Bring the schema to HEAD once per store; the generation, when read on the way."""
        with self._tables_lock:
            if self._tables_ready:
                return None
            revision, generation = self.recorded()
            if revision == HEAD:
                self._tables_ready = True
                return generation
            self.upgrade()
            return None

    def recorded(self) -> tuple[str | None, int | None]:
        """The schema revision recorded in the database and the store's generation, in one
        query; (None, None) when they cannot be read (no version table yet, a schema from
        before the generation, an outage: the upgrade that follows migrates or reports it)."""
        # Importing Alembic and loading its scripts cost a new process about 110 ms, every
        # worker start and every command; a database at head needs neither. The revision is
        # written in the transaction that finishes an upgrade, so reading HEAD here means
        # every table of HEAD is committed too. One round trip, not two: on PostgreSQL each
        # is a pool check-out with its ping.
        try:
            with self.engine.connect() as connection:
                rows = connection.exec_driver_sql(_FIRST_READ).all()
        except exc.DBAPIError:
            return None, None
        return (rows[0][0], rows[0][1] or 0) if len(rows) == 1 else (None, None)

    def upgrade(self) -> tuple[str | None, str]:
        """Run the store's migrations to head now; (revision before, revision after)."""
        from . import migrations

        with self._outage_as_unavailable():
            try:
                result = migrations.upgrade_engine(self.engine)
            except exc.DBAPIError as error:
                # SQLite: another process created a table between our look and our CREATE
                # (PostgreSQL upgrades are serialised by an advisory lock). Look again.
                if not (
                    isinstance(error, (exc.ProgrammingError, exc.IntegrityError))
                    or "already exists" in str(error)
                ):
                    raise
                result = migrations.upgrade_engine(self.engine)
        self._tables_ready = True
        return result

    def add(
        self,
        checksum: str,
        instructions: str,
        *,
        source: str,
        output_format: str,
        width: int | None,
        height: int | None,
    ) -> bool:
        """Insert the row unless the checksum is already there; True when inserted."""
        row = {
            "checksum": checksum,
            "instructions": instructions,
            "source": source,
            "output_format": output_format,
            "width": width,
            "height": height,
        }
        return self.add_many([row]) == 1

    def add_many(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert-if-absent many rows in one transaction; returns how many were new.

        Each row has the keyword arguments of :meth:`add` plus ``checksum`` and
        ``instructions``.
        """
        return len(self.add_new(rows))

    def add_new(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        """:meth:`add_many`, returning the checksums of the rows that were new."""
        now = self._clock()
        values: dict[str, dict[str, Any]] = {}
        for row in rows:
            values.setdefault(
                row["checksum"],
                {
                    "checksum": row["checksum"],
                    "instructions": row["instructions"],
                    "source": row["source"],
                    "output_format": row["output_format"],
                    "width": row.get("width"),
                    "height": row.get("height"),
                    "state": "pending",
                    "token": 0,
                    "attempts": 0,
                    "created_at": now,
                },
            )
        if not values:
            return []
        if self._row_values is None:  # a driver of another parameter style: let SQLAlchemy write it
            with self._begin() as connection:
                return list(connection.execute(self._insert_if_absent, list(values.values())).scalars())
        # Written here rather than compiled: SQLAlchemy's first compile and first run of
        # this statement cost a new process 2 ms, more than the rest of its first
        # registration. The same SQL on both databases; 10 parameters a row.
        added: list[str] = []
        rows = list(values.values())
        with self._begin() as connection:
            for start in range(0, len(rows), _INSERT_ROWS):
                chunk = rows[start : start + _INSERT_ROWS]
                statement = _INSERT.format(values=", ".join([self._row_values] * len(chunk)))
                parameters = tuple(row[column] for row in chunk for column in _INSERT_COLUMNS)
                added.extend(connection.exec_driver_sql(statement, parameters).scalars())
        return added

    def find(self, checksum: str) -> Job | None:
        """The row for ``checksum``, or None when nothing is registered under it."""
        with self._begin() as connection:
            row = connection.execute(sa.select(jobs).where(jobs.c.checksum == checksum)).mappings().first()
        return Job(**row) if row is not None else None

    def get(self, checksum: str) -> Job:
        """The row for ``checksum``; :class:`NotRegisteredError` when there is none."""
        job = self.find(checksum)
        if job is None:
            raise NotRegisteredError(f"no instructions registered under {checksum}")
        return job

    def claim(self, checksum: str, *, lease: float, redo: bool = False) -> int | None:
        """Take the job for ``lease`` seconds; the new fencing token, or None if not claimable.

        Claimable: pending, working with an expired lease, failed with a ``retry_at``
        that has come, and with ``redo`` also done. One conditional UPDATE, so two
        claimers can never both win, on SQLite or PostgreSQL.
        """
        now = self._clock()
        claimable = [
            jobs.c.state == "pending",
            sa.and_(jobs.c.state == "working", jobs.c.lease_until < now),
            sa.and_(jobs.c.state == "failed", jobs.c.retry_at.is_not(None), jobs.c.retry_at <= now),
        ]
        if redo:
            claimable.append(jobs.c.state == "done")
        statement = (
            jobs.update()
            .where(jobs.c.checksum == checksum, sa.or_(*claimable))
            .values(
                state="working", token=jobs.c.token + 1, lease_until=now + lease, attempts=jobs.c.attempts + 1
            )
            .returning(jobs.c.token)
        )
        with self._begin() as connection:
            return connection.execute(statement).scalar_one_or_none()

    def complete(
        self,
        checksum: str,
        token: int,
        *,
        result_key: str,
        content_type: str,
        width: int | None,
        height: int | None,
        result_bytes: int | None,
    ) -> None:
        """Record the stored result of a claimed job (and its real size)."""
        self._fenced(
            checksum,
            token,
            state="done",
            reason=None,
            failure_status=None,
            retry_at=None,
            lease_until=None,
            completed_at=self._clock(),
            result_key=result_key,
            content_type=content_type,
            width=width,
            height=height,
            result_bytes=result_bytes,
        )

    def fail(
        self, checksum: str, token: int, reason: str, *, retry_at: float | None, status: int | None = None
    ) -> None:
        """Record why a claimed job failed; ``retry_at=None`` means never retry by itself.

        ``status`` is the HTTP status the failure answers with (404 for a missing
        source, 422 for one that cannot be decoded, ...), kept as ``failure_status``.
        """
        self._fenced(
            checksum,
            token,
            state="failed",
            reason=reason,
            failure_status=status,
            retry_at=retry_at,
            lease_until=None,
        )

    def release(self, checksum: str, token: int) -> None:
        """Give a claimed job back without a verdict, so the next claimer can take it."""
        self._fenced(checksum, token, state="pending", lease_until=None)

    def reset(self, checksums: Iterable[str] | None = None, *, states: Iterable[str] = ("failed",)) -> int:
        """Set rows in ``states`` (all of them, or only ``checksums``) back to pending.

        Clears the reason, failure status, retry time, lease and attempt count; returns how many rows
        changed. A worker still holding one of them loses its lease.
        """
        states = tuple(states)
        values = {
            "state": "pending",
            "reason": None,
            "failure_status": None,
            "retry_at": None,
            "lease_until": None,
            "attempts": 0,
        }
        changed = 0
        with self._begin() as connection:
            if checksums is None:
                return connection.execute(
                    jobs.update().where(jobs.c.state.in_(states)).values(**values)
                ).rowcount
            for chunk in _chunks(checksums):
                statement = jobs.update().where(jobs.c.state.in_(states), jobs.c.checksum.in_(chunk))
                changed += connection.execute(statement.values(**values)).rowcount
        return changed

    def touch(self, checksums: Iterable[str]) -> None:
        """Set ``accessed_at`` to now for many rows at once (for later purging of unused ones)."""
        chunks = list(_chunks(checksums))
        if not chunks:
            return
        now = self._clock()
        with self._begin() as connection:
            for chunk in chunks:
                connection.execute(jobs.update().where(jobs.c.checksum.in_(chunk)).values(accessed_at=now))

    def list(self, *, state: str | None = None, after: str | None = None, limit: int = 100) -> list[Job]:
        """Up to ``limit`` rows ordered by checksum, starting after the checksum ``after``."""
        statement = sa.select(jobs).order_by(jobs.c.checksum).limit(limit)
        if state is not None:
            statement = statement.where(jobs.c.state == state)
        if after is not None:
            statement = statement.where(jobs.c.checksum > after)
        with self._begin() as connection:
            return [Job(**row) for row in connection.execute(statement).mappings()]

    def count_by_state(self) -> dict[str, int]:
        """How many rows are in each state; states with no rows are left out."""
        statement = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        with self._begin() as connection:
            return {state: count for state, count in connection.execute(statement)}

    # Operations (``fileproc warm``, ``gc``, ``stats``, ``purge``): scans paged by checksum,
    # so memory stays flat however many rows there are.

    def claimable(self, *, after: str | None = None, limit: int = 500) -> builtins.list[Job]:
        """Rows a worker could take now (pending, failed and due for retry, working with an
        expired lease), up to ``limit``, ordered by checksum after ``after``. Pending rows
        whose result ``fileproc gc`` removed (they have a ``completed_at``) are left out:
        they are made again when next requested, not ahead of time."""
        return self._page(self._claimable_condition(), after, limit)

    def count_claimable(self) -> int:
        """How many rows :meth:`claimable` would list in all."""
        with self._begin() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(jobs).where(self._claimable_condition())
            ).scalar_one()

    def stale(self, before: float, *, after: str | None = None, limit: int = 500) -> builtins.list[Job]:
        """Done rows last requested (or, never requested, completed) before ``before``."""
        return self._page(self._stale_condition(before), after, limit)

    def evict_stale(self, checksums: Iterable[str], before: float) -> builtins.list[tuple[str, str]]:
        """Set those of ``checksums`` still done and stale back to pending, without a result;
        ``(checksum, result_key)`` of each, whose file the caller deletes. A row requested
        since it was listed stays done. The row is kept, so its URL (wherever it is still
        rendered or cached) makes the result again on its next request; ``completed_at``
        stays, which is how :meth:`claimable` tells it from a job never made."""
        evicted: list[tuple[str, str]] = []
        condition = self._stale_condition(before)
        with self._begin() as connection:
            for chunk in _chunks(checksums):
                keys = dict(
                    connection.execute(
                        sa.select(jobs.c.checksum, jobs.c.result_key).where(
                            condition, jobs.c.checksum.in_(chunk)
                        )
                    ).all()
                )
                if not keys:
                    continue
                statement = (
                    jobs.update()
                    .where(condition, jobs.c.checksum.in_(list(keys)))
                    .values(
                        state="pending",
                        result_key=None,
                        result_bytes=None,
                        accessed_at=None,
                        lease_until=None,
                    )
                    .returning(jobs.c.checksum)
                )
                evicted.extend(
                    (checksum, keys[checksum]) for checksum in connection.execute(statement).scalars()
                )
            if evicted:
                _advance_generation(connection)
        return evicted

    def delete(self, checksums: Iterable[str]) -> builtins.list[tuple[str, str | None]]:
        """Delete these rows whatever their state; ``(checksum, result_key)`` of each."""
        return self._delete(sa.true(), checksums)

    def by_source(self, source: str, *, after: str | None = None, limit: int = 500) -> builtins.list[Job]:
        """Rows whose instructions read ``source`` (the reference exactly as registered)."""
        return self._page(jobs.c.source == source, after, limit)

    def generation(self) -> int:
        """How many times rows were deleted (:meth:`delete`) or results evicted
        (:meth:`evict_stale`): what remembers a registration or a redirect compares it
        with the value it last read, and forgets when it moved."""
        if not self._tables_ready:
            value = self._first_use()  # a process's first read: the schema check reads it too
            if value is not None:
                return value
        # A read that commits nothing: a page's new registrations stay its only commit.
        with self._outage_as_unavailable(), self.engine.connect() as connection:
            value = connection.exec_driver_sql(_GENERATION).scalar()
        return value or 0

    def results(self, checksums: Iterable[str]) -> dict[str, str]:
        """The result key of each of ``checksums`` that is done: ``{checksum: key}``."""
        found: dict[str, str] = {}
        self.create_tables()
        # A read that commits nothing: a page's new registrations stay its only commit.
        with self._outage_as_unavailable(), self.engine.connect() as connection:
            for chunk in _chunks(checksums):
                statement = sa.select(jobs.c.checksum, jobs.c.result_key).where(
                    jobs.c.state == "done", jobs.c.checksum.in_(chunk)
                )
                found.update((checksum, key) for checksum, key in connection.execute(statement))
        return found

    def existing(self, checksums: Iterable[str]) -> set[str]:
        """Those of ``checksums`` that have a row."""
        found: set[str] = set()
        with self._begin() as connection:
            for chunk in _chunks(checksums):
                found.update(
                    connection.execute(sa.select(jobs.c.checksum).where(jobs.c.checksum.in_(chunk))).scalars()
                )
        return found

    def stale_totals(self, before: float) -> tuple[int, int]:
        """How many stale done rows there are and the bytes of their results."""
        statement = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(jobs.c.result_bytes), 0)).where(
            self._stale_condition(before)
        )
        with self._begin() as connection:
            count, size = connection.execute(statement).one()
        return int(count), int(size)

    def statistics(self, *, top: int = 10) -> dict[str, Any]:
        """Counts by state, the ``top`` failure reasons, bytes stored, the oldest pending row."""
        failures = (
            sa.select(jobs.c.reason, sa.func.count().label("count"))
            .where(jobs.c.state == "failed")
            .group_by(jobs.c.reason)
            .order_by(sa.desc("count"), jobs.c.reason)
            .limit(top)
        )
        done = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(jobs.c.result_bytes), 0)).where(
            jobs.c.state == "done"
        )
        oldest = sa.select(sa.func.min(jobs.c.created_at)).where(jobs.c.state == "pending")
        by_state = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        with self._begin() as connection:
            states = {state: count for state, count in connection.execute(by_state)}
            reasons = [(reason, count) for reason, count in connection.execute(failures)]
            results, stored = connection.execute(done).one()
            oldest_pending = connection.execute(oldest).scalar_one()
        return {
            "states": states,
            "failures": reasons,
            "results": int(results),
            "result_bytes": int(stored),
            "oldest_pending": oldest_pending,
        }

    def _claimable_condition(self):
        now = self._clock()
        return sa.or_(
            sa.and_(jobs.c.state == "pending", jobs.c.completed_at.is_(None)),
            sa.and_(jobs.c.state == "working", jobs.c.lease_until < now),
            sa.and_(jobs.c.state == "failed", jobs.c.retry_at.is_not(None), jobs.c.retry_at <= now),
        )

    @staticmethod
    def _stale_condition(before: float):
        return sa.and_(
            jobs.c.state == "done", sa.func.coalesce(jobs.c.accessed_at, jobs.c.completed_at) < before
        )

    def _page(self, condition, after: str | None, limit: int) -> builtins.list[Job]:
        statement = sa.select(jobs).where(condition).order_by(jobs.c.checksum).limit(limit)
        if after is not None:
            statement = statement.where(jobs.c.checksum > after)
        with self._begin() as connection:
            return [Job(**row) for row in connection.execute(statement).mappings()]

    def _delete(self, condition, checksums: Iterable[str]) -> builtins.list[tuple[str, str | None]]:
        deleted: list[tuple[str, str | None]] = []
        with self._begin() as connection:
            for chunk in _chunks(checksums):
                statement = (
                    jobs.delete()
                    .where(condition, jobs.c.checksum.in_(chunk))
                    .returning(jobs.c.checksum, jobs.c.result_key)
                )
                deleted.extend((checksum, key) for checksum, key in connection.execute(statement))
            if deleted:
                _advance_generation(connection)
        return deleted

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _fenced(self, checksum: str, token: int, **values: Any) -> None:
        statement = (
            jobs.update()
            .where(jobs.c.checksum == checksum, jobs.c.token == token, jobs.c.state == "working")
            .values(**values)
        )
        with self._begin() as connection:
            if connection.execute(statement).rowcount != 1:
                raise LeaseLostError(f"lease on {checksum} (token {token}) was lost to another worker")

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        self.create_tables()
        with self._outage_as_unavailable(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _outage_as_unavailable(self) -> Iterator[None]:
        try:
            yield
        except exc.DBAPIError as error:
            if not (isinstance(error, exc.OperationalError) or error.connection_invalidated):
                raise
            raise UnavailableError(_DATABASE_DOWN, detail=self._short_reason(error)) from None
        except exc.TimeoutError as error:  # every pooled connection is busy
            raise UnavailableError(_DATABASE_BUSY, detail=self._short_reason(error)) from None

    def _short_reason(self, error: Exception) -> str:
        original = getattr(error, "orig", None) or error
        lines = [line.strip() for line in str(original).splitlines() if line.strip()]
        reason = lines[0] if lines else type(original).__name__
        password = self.engine.url.password
        if password:
            reason = reason.replace(str(password), "***")
        return reason[:200]


_INSERT_COLUMNS = (
    "checksum",
    "instructions",
    "source",
    "output_format",
    "width",
    "height",
    "state",
    "token",
    "attempts",
    "created_at",
)
_INSERT = (
    f"INSERT INTO fileproc_jobs ({', '.join(_INSERT_COLUMNS)}) VALUES {{values}} "
    "ON CONFLICT (checksum) DO NOTHING RETURNING checksum"
)
_INSERT_ROWS = 500  # 5000 parameters: within SQLite's limit (since 3.32) and PostgreSQL's
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# Read by every process on first use: plain SQL, the same on both databases, so that
# SQLAlchemy has nothing to compile (a first compile costs a new process a millisecond).
# (Every revision from HEAD on has the generation table: a later one dropping it changes this.)
_FIRST_READ = f"SELECT version_num, (SELECT value FROM fileproc_generation WHERE id = 1) FROM {VERSION_TABLE}"
_GENERATION = "SELECT value FROM fileproc_generation WHERE id = 1"


def find_store(database_url: str, *, clock: Callable[[], float] = time.time) -> InstructionStore | None:
    """The store at ``database_url`` if one was ever made there, else None; creates nothing.

    For commands that read or change what a site registered (``fileproc stats``, ``warm``,
    ``purge`` ...): pointed at the wrong place (another working directory, a relative
    SQLite URL), they must say so, not make an empty store and report it. A SQLite file
    that does not exist is not opened (opening would create it); a database without the
    store's tables is not migrated. An outage raises :class:`UnavailableError` as usual.
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite" and _is_file(url.database):
        if not _sqlite_has_store(url.database):
            return None
        return InstructionStore(database_url, clock=clock)
    store = InstructionStore(database_url, clock=clock)
    try:
        with store._outage_as_unavailable(), store.engine.connect() as connection:
            inspector = sa.inspect(connection)
            made = inspector.has_table(VERSION_TABLE) or inspector.has_table(jobs.name)
    except BaseException:
        store.dispose()
        raise
    if not made:
        store.dispose()
        return None
    return store


def upgrade(database_url: str) -> tuple[str | None, str]:
    """Bring the database at ``database_url`` to the newest schema; (before, after) revisions.

    What ``fileproc migrate`` runs. Safe to repeat: a database at head is left alone.
    """
    store = InstructionStore(database_url)
    try:
        return store.upgrade()
    finally:
        store.dispose()


def location(database_url: str) -> str:
    """Where a store lives, for messages: a SQLite file's absolute path, or the URL
    without its password."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite" and _is_file(url.database):
        return os.path.abspath(url.database)
    return url.render_as_string(hide_password=True)


def _sqlite_has_store(path: str) -> bool:
    """Whether the SQLite file at ``path`` exists and holds the store's tables, read
    without changing it: the store's own connections would switch it to WAL."""
    import sqlite3

    if not os.path.isfile(path):
        return False
    try:
        reading = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        with contextlib.closing(reading) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as error:
        raise UnavailableError(_DATABASE_DOWN, detail=f"{path}: {error}") from None
    return bool(names & {VERSION_TABLE, jobs.name})


def _is_file(database: str | None) -> TypeGuard[str]:
    if not database:
        return False
    return database != ":memory:" and not database.startswith("file:")


def _advance_generation(connection: Connection) -> None:
    connection.execute(
        generations.update().where(generations.c.id == 1).values(value=generations.c.value + 1)
    )


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _make_parent_directory(database: str | None) -> None:
    if not _is_file(database):
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    except OSError as error:
        raise UnavailableError(
            f"database unavailable: cannot create its directory ({error.strerror})"
        ) from None


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so switching to WAL waits for other connections instead of failing.
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
