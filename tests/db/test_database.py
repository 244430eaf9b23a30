"""The metadata database, on SQLite and on PostgreSQL: migrations, constraints, cascades, and time limits on
everything that could wait: SQLite locks, PostgreSQL connections and statements."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from modelport.core.roles import Role
from modelport.core.states import BuildStatus
from modelport.db import ApiToken, Base, Database, Deployment, Group, Module, User, Version
from modelport.db.database import _alembic_config, unavailable


@pytest.fixture
def database(database_url):
    db = Database(database_url)
    db.migrate()
    yield db
    db.close()


def test_migrate_creates_the_schema_and_is_idempotent(database_url):
    db = Database(database_url)
    try:
        assert db.revision() is None
        db.migrate()
        assert db.revision() == Database.head() == "0008"
        db.migrate()
        assert db.revision() == "0008"
        tables = set(inspect(db.engine).get_table_names())
        assert {"modules", "versions", "deployments", "apis", "api_tokens", "alembic_version"} <= tables
        assert {"users", "groups", "memberships", "audit_events", "buckets", "server_keys"} <= tables
        assert {"jobs", "webhook_secrets", "webhook_messages", "webhook_deliveries"} <= tables
    finally:
        db.close()


def test_versions_round_trip_with_their_spec_and_build_status(database):
    with database.session() as session:
        session.add(Module(name="digits", manifest={"kind": "Module"}))
        session.add(
            Version(
                module_name="digits",
                name="v1.0.0",
                digest="sha256:" + "0" * 64,
                size=123,
                commit="a" * 40,
                tag="v1.0.0",
                spec={"inputs": [{"name": "image"}]},
            )
        )
    with database.session() as session:
        version = session.scalars(select(Version)).one()
        assert version.build_status is BuildStatus.PENDING
        assert version.spec == {"inputs": [{"name": "image"}]}
        assert version.pushed_at.tzinfo is not None
        version.build_status = BuildStatus.READY
    with database.session() as session:
        assert session.scalars(select(Version.build_status)).one() is BuildStatus.READY


def test_a_version_name_is_unique_per_module(database):
    with database.session() as session:
        session.add_all([Module(name="a"), Module(name="b")])
        session.add_all(
            [
                Version(module_name="a", name="v1", digest="sha256:1", size=1),
                Version(module_name="b", name="v1", digest="sha256:2", size=1),
            ]
        )
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(Version(module_name="a", name="v1", digest="sha256:3", size=1))


def test_a_version_needs_its_module(database):
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(Version(module_name="ghost", name="v1", digest="sha256:1", size=1))


def test_deleting_a_module_deletes_its_versions_and_deployment(database):
    with database.session() as session:
        session.add(Module(name="m"))
        session.add(Version(module_name="m", name="v1", digest="sha256:1", size=1))
        session.add(Deployment(module_name="m", active_version="v1"))
    with database.session() as session:
        session.execute(text("DELETE FROM modules WHERE name = 'm'"))
    with database.session() as session:
        assert session.scalars(select(Version)).all() == []
        assert session.scalars(select(Deployment)).all() == []


def test_a_failed_transaction_changes_nothing(database):
    def add_then_fail() -> None:
        with database.session() as session:
            session.add(Module(name="m"))
            session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        add_then_fail()
    with database.session() as session:
        assert session.scalars(select(Module)).all() == []


def test_token_digests_are_unique(database):
    with database.session() as session:
        user = User(name="ana", role=Role.ADMIN)
        session.add(user)
        session.flush()
        session.add(ApiToken(user_id=user.id, name="a", prefix="mp_abc", digest="d" * 64))
        user_id = user.id
    with pytest.raises(IntegrityError) as duplicate, database.session() as session:
        session.add(ApiToken(user_id=user_id, name="b", prefix="mp_abd", digest="d" * 64))
    assert not unavailable(duplicate.value)  # a broken constraint is an error, not an outage


def test_group_names_are_unique_and_memberships_go_with_their_user(database):
    with database.session() as session:
        team = Group(path="/team/users")
        session.add(User(name="ana", role=Role.USER, groups=[team]))
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(Group(path="/team/users"))
    with database.session() as session:
        session.delete(session.scalars(select(User)).one())
    with database.session() as session:
        assert session.scalars(select(Group)).one().members == []
        assert session.execute(text("SELECT count(*) FROM memberships")).scalar() == 0


def test_upgrading_from_0002_gives_existing_tokens_to_an_admin_and_clears_non_group_owners(database_url):
    db = Database(database_url)
    try:
        config = _alembic_config()
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            connection.execute(
                text(
                    "INSERT INTO api_tokens (name, prefix, digest, role, created_at) "
                    "VALUES ('bootstrap', 'mp_abc', :digest, 'admin', CURRENT_TIMESTAMP)"
                ),
                {"digest": "d" * 64},
            )
            connection.execute(
                text(
                    "INSERT INTO modules (name, owner, manifest, created_at) "
                    "VALUES ('a', 'bootstrap', '{}', CURRENT_TIMESTAMP), "
                    "('b', '/team', '{}', CURRENT_TIMESTAMP)"
                )
            )
        db.migrate()
        with db.session() as session:
            token = session.scalars(select(ApiToken)).one()
            assert (token.user.name, token.user.role, token.kind) == ("admin", Role.ADMIN, "api")
            owners = dict(session.execute(select(Module.name, Module.owner)).all())
            assert owners == {"a": None, "b": "/team"}
    finally:
        db.close()


def test_sqlite_runs_in_wal_mode(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        db.migrate()
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.close()


def test_plain_postgresql_urls_use_psycopg():
    assert Database("postgresql://u@127.0.0.1:5/x").url.startswith("postgresql+psycopg://")


def test_the_migrations_build_exactly_the_models(database_url):
    db = Database(database_url)
    try:
        db.migrate()
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        db.close()


def test_a_write_waits_for_another_writers_sqlite_lock_only_as_long_as_told(tmp_path: Path):
    path = tmp_path / "m.db"
    db = Database(f"sqlite:///{path}", lock_wait=0.5)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        db.migrate()
        holder.execute("BEGIN IMMEDIATE")  # another process writing
        started = time.monotonic()
        with pytest.raises(OperationalError) as locked, db.session() as session:
            session.add(Module(name="m"))
        assert 0.4 < time.monotonic() - started < 3
        assert unavailable(locked.value)
        with db.session() as session:  # readers are not held up
            assert session.scalars(select(Module)).all() == []
        holder.execute("ROLLBACK")
        with db.session() as session:
            session.add(Module(name="m"))
    finally:
        holder.close()
        db.close()


def test_postgresql_statements_stop_at_their_time_limit(postgres):
    url = postgres.create_database(f"t{uuid.uuid4().hex[:12]}")
    default, short = Database(url), Database(url, statement_timeout=0.2)
    try:
        default.migrate()  # migrations run without the limit, and leave it in place for what follows
        with default.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "10s"
        started = time.monotonic()
        with pytest.raises(OperationalError) as cancelled, short.engine.connect() as connection:
            connection.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 2
        assert unavailable(cancelled.value)
    finally:
        default.close()
        short.close()


def test_a_postgresql_server_that_never_answers_fails_the_connection_in_time():
    with socket.socket() as silent:  # accepts connections and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        db = Database(f"postgresql://modelport@127.0.0.1:{silent.getsockname()[1]}/x", connect_timeout=1)
        failures: list[Exception] = []

        def connect() -> None:
            try:
                with db.engine.connect():
                    pass
            except Exception as exc:
                failures.append(exc)

        started = time.monotonic()
        attempt = threading.Thread(target=connect, daemon=True)
        attempt.start()
        attempt.join(10)
        assert failures, "the connection was still waiting after 10 s"
        assert time.monotonic() - started < 5 and unavailable(failures[0])
        db.close()
