"""Alembic environment: always online, on the connection :func:`upgrade_engine` hands over.

Run through :mod:`fileproc_wsgi.store.migrations` (or ``fileproc migrate``), not the ``alembic``
command: there is no ini file, and the connection comes from the caller.
"""

from alembic import context

from fileproc_wsgi.store.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("fileproc_wsgi migrations run through fileproc_wsgi.store.upgrade()")
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
