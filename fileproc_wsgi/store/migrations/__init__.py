"""Schema migrations of the instruction store (Alembic, packaged with the library).

No ``alembic.ini`` is needed: :func:`alembic_config` builds the configuration in code,
pointing at the scripts in this package, and keeps the applied revision in its own table,
``fileproc_alembic_version``, so a host application's own Alembic history is never touched.

:func:`upgrade_engine` brings a database to the newest revision (for a database URL,
:func:`fileproc_wsgi.store.upgrade` opens it the way the store does). A database made by a release
before migrations existed (``fileproc_jobs`` there, no version table) is stamped at the
initial revision, whose schema it already has, and then upgraded from there.
:class:`~fileproc_wsgi.store.InstructionStore` runs the same upgrade on first use; in
production run ``fileproc migrate`` once per deployment instead, before starting the
servers, so no request ever waits on a schema change.
"""

from __future__ import annotations

import os

from ..schema import VERSION_TABLE

INITIAL = "0001"
# The newest revision under versions/, known without Alembic: a store compares the
# database's recorded revision with it on first use and imports Alembic only when they
# differ. Raise it with every new revision (a test compares it with the scripts).
HEAD = "0002"
_LOCK_KEY = 0x66696C6570726F63  # "fileproc": PostgreSQL advisory lock serialising upgrades


def alembic_config(connection=None):
    """An Alembic Config for the packaged scripts, bound to ``connection`` when given."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", os.path.dirname(os.path.abspath(__file__)))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current(connection) -> str | None:
    """The revision a database is at, or None when it has no version table (or an empty one)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def head() -> str:
    """The newest revision shipped with this release."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None  # None only for a directory without revisions; this one ships them
    return revision


def upgrade_engine(engine) -> tuple[str | None, str]:
    """Bring the database behind ``engine`` to head in one transaction; (before, after).

    On PostgreSQL the transaction first takes an advisory lock, so processes starting
    together upgrade one after the other (the later ones find nothing to do). Raises
    SQLAlchemy's exceptions: callers decide what an outage means to them.
    """
    import sqlalchemy as sa
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        before = current(connection)
        config = alembic_config(connection)
        if before is None and sa.inspect(connection).has_table("fileproc_jobs"):
            # Made by create_tables() before migrations existed: that is the initial schema.
            command.stamp(config, INITIAL)
        target = head()
        if current(connection) != target:
            command.upgrade(config, "head")
        return before, target
