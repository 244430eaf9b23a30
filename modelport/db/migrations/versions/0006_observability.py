"""observability: the request log, statistics rollups, the publication history, drift samples and references

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from modelport.db.models import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("module", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=True),
        sa.Column("caller", sa.String(length=255), nullable=False),
        sa.Column("caller_id", sa.Integer(), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("queue_ms", sa.Float(), nullable=False),
        sa.Column("compute_ms", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("request_bytes", sa.BigInteger(), nullable=False),
        sa.Column("response_bytes", sa.BigInteger(), nullable=False),
        sa.Column("model_key", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.String(length=1024), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_request_log_module_at", "request_log", ["module", "at", "id"])
    op.create_index("ix_request_log_caller_at", "request_log", ["caller_id", "at", "id"])
    op.create_index("ix_request_log_at", "request_log", ["at", "id"])
    op.create_table(
        "stats_rollups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("module", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("start", UtcDateTime(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("codes", sa.JSON(), nullable=False),
        sa.Column("batches", sa.JSON(), nullable=False),
        sa.Column("request_bytes", sa.BigInteger(), nullable=False),
        sa.Column("response_bytes", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.LargeBinary(), nullable=False),
        sa.Column("queue", sa.LargeBinary(), nullable=False),
        sa.Column("compute", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("module", "version", "resolution", "start"),
    )
    op.create_index("ix_stats_rollups_module_start", "stats_rollups", ["module", "resolution", "start"])
    op.create_table(
        "module_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("module", sa.String(length=63), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("from_version", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_module_events_module_at", "module_events", ["module", "at", "id"])
    op.create_table(
        "drift_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("module", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drift_samples_module_version_at", "drift_samples", ["module", "version", "at", "id"])
    op.create_table(
        "drift_references",
        sa.Column("module", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=1024), nullable=True),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("module", "version"),
    )


def downgrade() -> None:
    op.drop_table("drift_references")
    op.drop_index("ix_drift_samples_module_version_at", table_name="drift_samples")
    op.drop_table("drift_samples")
    op.drop_index("ix_module_events_module_at", table_name="module_events")
    op.drop_table("module_events")
    op.drop_index("ix_stats_rollups_module_start", table_name="stats_rollups")
    op.drop_table("stats_rollups")
    op.drop_index("ix_request_log_at", table_name="request_log")
    op.drop_index("ix_request_log_caller_at", table_name="request_log")
    op.drop_index("ix_request_log_module_at", table_name="request_log")
    op.drop_table("request_log")
