"""The instruction store's tables: SQLAlchemy Core on their own ``MetaData``.

``fileproc_jobs`` holds one row per registered checksum (read back as a :class:`Job`),
``fileproc_generation`` a single counter. The Alembic revisions in
:mod:`fileproc_wsgi.store.migrations` create them (a test compares the two), and keep the
applied revision in :data:`VERSION_TABLE`. Nothing here connects to a database.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

# Alembic's own table, under a name of ours: a host application's ``alembic_version`` stays free.
VERSION_TABLE = "fileproc_alembic_version"

STATES = ("pending", "working", "done", "failed")

metadata = sa.MetaData()

jobs = sa.Table(
    "fileproc_jobs",
    metadata,
    sa.Column("checksum", sa.String(64), primary_key=True),
    sa.Column("instructions", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("output_format", sa.String(8), nullable=False),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("state", sa.String(10), nullable=False, index=True),
    sa.Column("token", sa.Integer, nullable=False, default=0),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("failure_status", sa.Integer, nullable=True),
    sa.Column("retry_at", sa.Float, nullable=True),
    sa.Column("result_key", sa.Text, nullable=True),
    sa.Column("content_type", sa.String(64), nullable=True),
    sa.Column("result_bytes", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("accessed_at", sa.Float, nullable=True),
)

# One row (id 1): raised in the same transaction as every removal by ``fileproc purge`` and
# ``fileproc gc --delete``. Processes compare it with the value they last read (at most once
# per source_check_interval) and, when it moved, forget the registrations and redirects they
# remember, which may name a removed row or file.
generations = sa.Table(
    "fileproc_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Integer, nullable=False),
)


@dataclasses.dataclass(frozen=True)
class Job:
    """A snapshot of one ``fileproc_jobs`` row; reading it again may give newer values.

    ``reason`` and ``failure_status`` (the HTTP status a failed job answers with) are set
    while ``state`` is ``failed``.
    """

    checksum: str
    instructions: str
    source: str
    output_format: str
    width: int | None
    height: int | None
    state: str
    token: int
    lease_until: float | None
    attempts: int
    reason: str | None
    failure_status: int | None
    retry_at: float | None
    result_key: str | None
    content_type: str | None
    result_bytes: int | None
    created_at: float
    completed_at: float | None
    accessed_at: float | None
