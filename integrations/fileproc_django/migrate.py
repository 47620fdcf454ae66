"""``manage.py migrate`` brings the instruction store's tables to this release's schema.

The store is not Django models: its tables are migrated by its own Alembic revisions
(:mod:`fileproc_wsgi.store.migrations`, what ``fileproc migrate`` runs), kept in their own
version table. This ``post_migrate`` handler runs them on the database the store lives in,
when ``migrate`` runs on that alias (``FILEPROCESSOR_DATABASE``, ``"default"`` unless
set), so a deployment's usual ``migrate`` step is all it needs.
"""

from __future__ import annotations

import sys

from django.conf import settings

from . import conf


def upgrade_store(*, using: str, verbosity: int = 1, **kwargs) -> None:
    """Run the store's migrations when ``migrate`` ran on the store's database alias."""
    if "plan" not in kwargs:
        return  # flush sends post_migrate too (after every TransactionTestCase): nothing to migrate
    if using != getattr(settings, "FILEPROCESSOR_DATABASE", "default"):
        return
    config = conf.config_from_settings()
    if config.registrar_url:
        return  # the processing server keeps the store
    stdout = kwargs.get("stdout") or sys.stdout
    if conf.in_memory(config.database_url):
        # Nothing made here would outlive this command; the store makes its tables when
        # first used (what an in-memory test database needs).
        if verbosity >= 2:
            stdout.write("  fileproc_jobs: in-memory database, made on first use\n")
        return
    from fileproc_wsgi.store import upgrade

    before, after = upgrade(config.database_url)
    if before != after and verbosity >= 1:
        stdout.write(f"  fileproc_jobs: upgraded from {before or 'no revision'} to {after}\n")
    elif verbosity >= 2:
        stdout.write(f"  fileproc_jobs: already at revision {after}\n")
    loaded = conf.loaded_config()
    if loaded is not None and loaded.database_url != config.database_url:
        # The test runner renames the database before migrating it: follow it there.
        conf.reset()
