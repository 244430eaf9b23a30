"""rollout targets, build errors and applied Api manifests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from modelport.db.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target_version", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("observed_generation", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("build_error", sa.Text(), nullable=True))
    op.create_table(
        "apis",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("module_name", sa.String(length=63), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["module_name"], ["modules.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("apis", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apis_module_name"), ["module_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("apis", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apis_module_name"))
    op.drop_table("apis")
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("build_error")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("observed_generation")
        batch_op.drop_column("target_version")
