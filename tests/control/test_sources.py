"""Git sources with autoDeploy: real repositories in tmp_path, polled, packed, pushed and deployed."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelport.artifacts import Artifact
from modelport.control.audit import Actor, AuditTrail
from modelport.control.manifests import Manifests
from modelport.control.sources import GitSources, PollOutcome
from modelport.core.errors import VersionExists
from modelport.db import Database, Version

ECHO = Path(__file__).parents[1] / "fixtures" / "modules" / "echo"
BROKEN_DOCSTRING = '    """Echo text back.\n\n    :type inputs.ghost: str\n'


@pytest.fixture(autouse=True)
def _plain_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Git without the machine's configuration, with an identity for commits."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, **({"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {})}
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout.strip()


def commit(repo: Path, message: str, *, date: str | None = None) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding the echo module under `modules/echo`, committed but not tagged."""
    root = tmp_path / "upstream"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("models\n")
    shutil.copytree(ECHO, root / "modules" / "echo", ignore=shutil.ignore_patterns("__pycache__"))
    commit(root, "Add echo")
    return root


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'modelport.db'}")
    db.migrate()
    try:
        yield db
    finally:
        db.close()


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Platform:
    """The push and deploy callbacks, recording their calls; a push writes a version row as real ones do."""

    database: Database
    pushes: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    deploys: list[tuple[str, str]] = field(default_factory=list)
    push_error: Exception | None = None
    deploy_error: Exception | None = None

    async def push(self, artifact: Artifact, pushed_by: str) -> str:
        self.pushes.append((artifact.name, artifact.version, artifact.commit, pushed_by))
        if self.push_error is not None:
            raise self.push_error
        with self.database.session() as session:
            session.add(
                Version(
                    module_name=artifact.name,
                    name=artifact.version,
                    digest=artifact.digest,
                    size=artifact.size,
                    commit=artifact.commit,
                    tag=artifact.tag,
                    pushed_by=pushed_by,
                )
            )
        return artifact.version

    async def deploy(self, module: str, version: str) -> None:
        self.deploys.append((module, version))
        if self.deploy_error is not None:
            raise self.deploy_error


@pytest.fixture
def platform(database: Database) -> Platform:
    return Platform(database)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sources(database: Database, platform: Platform, clock: Clock, tmp_path: Path) -> GitSources:
    return GitSources(
        database, work_dir=tmp_path / "work", push=platform.push, deploy=platform.deploy, clock=clock
    )


def apply_source(database: Database, repo: Path | str, *, name: str = "echo", **source: Any) -> None:
    spec = {"git": str(repo), "path": "modules/echo", "autoDeploy": True, "pollSeconds": 10, **source}
    document = {
        "apiVersion": "modelport/v1",
        "kind": "Module",
        "metadata": {"name": name},
        "spec": {"source": spec},
    }
    Manifests(database, audit=AuditTrail(database)).apply([document], actor=Actor("alice"))


async def poll_later(sources: GitSources, clock: Clock) -> list[PollOutcome]:
    clock.now += 10
    return await sources.poll_once()


def summary(outcomes: list[PollOutcome]) -> list[tuple[str, str | None, bool]]:
    return [(o.module, o.tag, o.ok) for o in outcomes]


async def test_a_new_tag_is_pushed_and_deployed_once(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)

    first = await sources.poll_once()
    again = await poll_later(sources, clock)

    assert summary(first) == [("echo", "v1.0.0", True)]
    assert first[0].message == f"pushed and deployed v1.0.0 ({head[:12]})"
    assert platform.pushes == [("echo", "v1.0.0", head, "autodeploy")]
    assert platform.deploys == [("echo", "v1.0.0")]
    assert again == []
    assert platform.pushes == [("echo", "v1.0.0", head, "autodeploy")]
    assert (sources.work_dir / "echo.git").is_dir()
    assert list((sources.work_dir / "checkouts").iterdir()) == []


async def test_a_newer_tag_later_is_pushed(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1.9.0")
    apply_source(database, repo)
    await sources.poll_once()

    (repo / "modules" / "echo" / "README.md").write_text("now with a readme\n")
    newer = commit(repo, "Document echo")
    git(repo, "tag", "-a", "v1.10.0", "-m", "Release 1.10.0")  # annotated: peeled to its commit
    git(repo, "tag", "v1.9.1")  # newer tag, lower version

    outcomes = await sources.poll_once()
    assert outcomes == []  # the interval has not elapsed: not even fetched
    outcomes = await poll_later(sources, clock)

    assert summary(outcomes) == [("echo", "v1.10.0", True)]
    assert [(v, c) for _, v, c, _ in platform.pushes] == [("v1.9.0", first), ("v1.10.0", newer)]
    assert platform.deploys == [("echo", "v1.9.0"), ("echo", "v1.10.0")]


async def test_an_untagged_commit_releases_nothing(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    apply_source(database, repo)
    assert await sources.poll_once() == []

    git(repo, "tag", "v1.0.0")
    assert summary(await poll_later(sources, clock)) == [("echo", "v1.0.0", True)]

    (repo / "modules" / "echo" / "notes.txt").write_text("work in progress\n")
    commit(repo, "Work in progress")
    assert await poll_later(sources, clock) == []
    assert len(platform.pushes) == 1


async def test_a_broken_tag_is_reported_once_and_the_next_good_tag_works(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    inference = repo / "modules" / "echo" / "inference.py"
    good = inference.read_text()
    inference.write_text(good.replace('    """Echo text back.\n', BROKEN_DOCSTRING))
    commit(repo, "Break the docstring")
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)

    [failed] = await sources.poll_once()
    assert (failed.tag, failed.ok) == ("v1.0.0", False)
    assert failed.message.startswith("packing v1.0.0 failed: ")
    assert failed.message.startswith(
        "packing v1.0.0 failed: modules/echo/inference.py:4: `:type inputs.ghost:`"
    )
    assert await poll_later(sources, clock) == []  # not retried

    inference.write_text(good)
    commit(repo, "Fix the docstring")
    git(repo, "tag", "v1.0.1")
    assert summary(await poll_later(sources, clock)) == [("echo", "v1.0.1", True)]
    assert [v for _, v, _, _ in platform.pushes] == ["v1.0.1"]


async def test_auto_deploy_off_does_nothing(
    repo: Path, database: Database, sources: GitSources, platform: Platform
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo, autoDeploy=False)

    assert await sources.poll_once() == []
    assert platform.pushes == []
    assert not (sources.work_dir / "echo.git").exists()


async def test_a_tag_already_pushed_by_hand_is_left_alone(
    repo: Path, database: Database, sources: GitSources, platform: Platform
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)
    with database.session() as session:
        session.add(Version(module_name="echo", name="v1.0.0", digest="sha256:" + "0" * 64, size=1))

    assert await sources.poll_once() == []
    assert platform.pushes == platform.deploys == []


async def test_a_failed_push_is_not_retried(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)
    platform.push_error = VersionExists("echo v1.0.0 was already pushed with different content")

    [failed] = await sources.poll_once()

    assert not failed.ok
    assert failed.message == "pushing v1.0.0 failed: echo v1.0.0 was already pushed with different content"
    assert platform.deploys == []
    assert await poll_later(sources, clock) == []
    assert len(platform.pushes) == 1


async def test_a_failed_deploy_is_reported(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)
    platform.deploy_error = RuntimeError("no capacity")

    [failed] = await sources.poll_once()

    assert (failed.ok, failed.message) == (False, "deploying v1.0.0 failed: no capacity")
    assert await poll_later(sources, clock) == []


async def test_one_broken_source_does_not_stop_the_others(
    repo: Path, database: Database, sources: GitSources, platform: Platform, tmp_path: Path
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, tmp_path / "missing", name="absent")
    apply_source(database, repo)

    outcomes = await sources.poll_once()

    assert summary(outcomes) == [("absent", None, False), ("echo", "v1.0.0", True)]
    assert outcomes[0].message.startswith(f"fetching {tmp_path / 'missing'} failed: `git clone`")
    assert not (sources.work_dir / "absent.git").exists()
    assert [m for m, *_ in platform.pushes] == ["echo"]


async def test_a_module_at_the_root_is_named_after_its_module(
    tmp_path: Path, database: Database, sources: GitSources, platform: Platform
) -> None:
    root = tmp_path / "some-repository"
    shutil.copytree(ECHO, root, ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q")
    commit(root, "Add echo")
    git(root, "tag", "v2.0.0")
    apply_source(database, f"file://{root}", path=".")

    assert summary(await sources.poll_once()) == [("echo", "v2.0.0", True)]


async def test_a_repository_holding_another_module_is_refused(
    repo: Path, database: Database, sources: GitSources, platform: Platform
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo, name="other")

    [failed] = await sources.poll_once()

    assert "packing v1.0.0 failed: the repository's module is 'echo'" in failed.message
    assert platform.pushes == []


async def test_a_source_path_linking_out_of_the_repository_is_refused(
    tmp_path: Path, database: Database, sources: GitSources, platform: Platform
) -> None:
    outside = tmp_path / "outside" / "echo"
    shutil.copytree(ECHO, outside, ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "sneaky"
    root.mkdir()
    git(root, "init", "-q")
    (root / "echo").symlink_to(outside, target_is_directory=True)
    commit(root, "Link to a directory elsewhere on the server")
    git(root, "tag", "v1.0.0")
    apply_source(database, root, path="echo")

    [failed] = await sources.poll_once()

    assert failed.message == "packing v1.0.0 failed: echo leads outside the repository"
    assert platform.pushes == []


async def test_without_semver_tags_the_newest_tag_wins(
    repo: Path, database: Database, sources: GitSources, platform: Platform
) -> None:
    git(repo, "tag", "-a", "release-b", "-m", "b", date="2030-01-01T00:00:00Z")
    (repo / "modules" / "echo" / "notes.txt").write_text("later\n")
    commit(repo, "Later", date="2030-02-01T00:00:00Z")
    git(repo, "tag", "-a", "release-a", "-m", "a", date="2030-03-01T00:00:00Z")
    git(repo, "tag", "not/a-version")
    apply_source(database, repo)

    assert summary(await sources.poll_once()) == [("echo", "release-a", True)]


async def test_moved_and_deleted_tags_are_seen(
    repo: Path, database: Database, sources: GitSources, platform: Platform, clock: Clock
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)
    await sources.poll_once()

    git(repo, "tag", "v2.0.0")
    git(repo, "tag", "-d", "v2.0.0")
    git(repo, "tag", "v1.5.0")

    assert summary(await poll_later(sources, clock)) == [("echo", "v1.5.0", True)]
    tags = git(sources.work_dir / "echo.git", "tag", "--list")
    assert tags.split() == ["v1.0.0", "v1.5.0"]


async def test_run_polls_until_stopped(
    repo: Path, database: Database, platform: Platform, tmp_path: Path
) -> None:
    git(repo, "tag", "v1.0.0")
    apply_source(database, repo)
    sources = GitSources(database, work_dir=tmp_path / "work", push=platform.push, deploy=platform.deploy)
    stop = asyncio.Event()

    task = asyncio.create_task(sources.run(stop, interval=0.01))
    async with asyncio.timeout(30):
        while not platform.deploys:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 30)

    assert platform.deploys == [("echo", "v1.0.0")]
