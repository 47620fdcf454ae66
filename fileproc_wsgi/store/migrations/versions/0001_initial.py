"""The fileproc_jobs table as create_tables() made it before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fileproc_jobs",
        sa.Column("checksum", sa.String(64), primary_key=True),
        sa.Column("instructions", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("output_format", sa.String(8), nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
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
    op.create_index("ix_fileproc_jobs_state", "fileproc_jobs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_fileproc_jobs_state", table_name="fileproc_jobs")
    op.drop_table("fileproc_jobs")
