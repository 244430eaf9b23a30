"""pipelines: applied `Pipeline` manifests, `Api`s that open a pipeline, and pipeline steps in the request log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from modelport.db.models import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("apis") as table:
        table.alter_column("module_name", existing_type=sa.String(length=63), nullable=True)
        table.add_column(sa.Column("pipeline_name", sa.String(length=63), nullable=True))
        table.create_foreign_key(
            "fk_apis_pipeline_name_pipelines", "pipelines", ["pipeline_name"], ["name"], ondelete="CASCADE"
        )
        table.create_index("ix_apis_pipeline_name", ["pipeline_name"])
    with op.batch_alter_table("request_log") as table:
        table.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        table.add_column(sa.Column("pipeline", sa.String(length=63), nullable=True))
        table.add_column(sa.Column("step", sa.String(length=63), nullable=True))
    op.create_index(
        "ix_request_log_parent",
        "request_log",
        ["parent_id"],
        sqlite_where=sa.text("parent_id IS NOT NULL"),
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_request_log_parent", table_name="request_log")
    with op.batch_alter_table("request_log") as table:
        table.drop_column("step")
        table.drop_column("pipeline")
        table.drop_column("parent_id")
    with op.batch_alter_table("apis") as table:
        table.drop_index("ix_apis_pipeline_name")
        table.drop_constraint("fk_apis_pipeline_name_pipelines", type_="foreignkey")
        table.drop_column("pipeline_name")
        table.alter_column("module_name", existing_type=sa.String(length=63), nullable=False)
    op.drop_table("pipelines")
