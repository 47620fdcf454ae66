"""Alembic revisions of the instruction store; each file is frozen once released."""
