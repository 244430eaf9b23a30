"""identity: users, groups and memberships, tokens owned by users, the identity revision, the audit trail

Existing tokens (each made for an admin) become tokens of one `admin` user. Module owners become group
paths; an owner that is not a path (the name of whoever pushed first) is cleared, leaving the module
to admins.

The users table keeps its server default on `disabled`: removing it would make SQLite rebuild the table,
and dropping it would cascade to the tokens just given to the admin.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from modelport.db.models import UtcDateTime, utcnow

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "role",
            sa.Enum("admin", "developer", "user", name="role", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("issuer", sa.String(length=512), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_login_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer", "subject"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "group_id"),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_memberships_group_id"), ["group_id"], unique=False)
    revisions = op.create_table(
        "identity_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(revisions, [{"id": 1, "revision": 0}])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for column in ("at", "actor", "action", "target"):
            batch_op.create_index(batch_op.f(f"ix_audit_events_{column}"), [column], unique=False)

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="api"))
    connection = op.get_bind()
    if connection.execute(sa.text("SELECT count(*) FROM api_tokens")).scalar():
        users = sa.table(
            "users",
            sa.column("id", sa.Integer),
            sa.column("name", sa.String),
            sa.column("role", sa.String),
            sa.column("disabled", sa.Boolean),
            sa.column("created_at", UtcDateTime),
        )
        connection.execute(
            users.insert().values(name="admin", role="admin", disabled=False, created_at=utcnow())
        )
        admin = connection.execute(sa.text("SELECT id FROM users WHERE name = 'admin'")).scalar_one()
        connection.execute(sa.text("UPDATE api_tokens SET user_id = :id"), {"id": admin})
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("kind", existing_type=sa.String(length=16), server_default=None)
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)
        batch_op.create_foreign_key("fk_api_tokens_user_id", "users", ["user_id"], ["id"], ondelete="CASCADE")
        batch_op.drop_column("role")
    connection.execute(sa.text("UPDATE modules SET owner = NULL WHERE owner NOT LIKE '/%'"))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="admin"))
    connection = op.get_bind()
    connection.execute(
        sa.text(
            "UPDATE api_tokens SET role = (SELECT users.role FROM users WHERE users.id = api_tokens.user_id)"
        )
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("role", existing_type=sa.String(length=16), server_default=None)
        batch_op.drop_constraint("fk_api_tokens_user_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))
        batch_op.drop_column("kind")
        batch_op.drop_column("user_id")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for column in ("at", "actor", "action", "target"):
            batch_op.drop_index(batch_op.f(f"ix_audit_events_{column}"))
    op.drop_table("audit_events")
    op.drop_table("identity_revision")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memberships_group_id"))
    op.drop_table("memberships")
    op.drop_table("groups")
    op.drop_table("users")
