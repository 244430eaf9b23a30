"""Environments: real uv builds under a temporary cache, shared by the tests of this file."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from modelport.runtime.environments import (
    BuildFailed,
    Environment,
    Environments,
    normalise_requirements,
)
from modelport.runtime.pool import PoolConfig, WorkerPool
from modelport.runtime.process import WorkerLaunch
from modelport.sdk.source import read_api_spec

FIXTURES = Path(__file__).parent.parent / "fixtures" / "modules"
SIX = "six==1.16.0\npackaging\n"
MISSING = "modelport-no-such-package-xyz==1.0"

WHERE_AM_I = '''\
import sys

import six


def inference(parameters, inputs, output_fields, model_key, model=None):
    """Tell where the worker runs.

    :param inputs.text: Anything
    :type inputs.text: str

    :param outputs.prefix: The interpreter's prefix
    :type outputs.prefix: str

    :param outputs.six: The version of six it imports
    :type outputs.six: str
    """
    return [{"prefix": sys.prefix, "six": six.__version__} for _ in inputs]
'''


class Lines(list[str]):
    """A build log that remembers its lines."""

    def __call__(self, line: str) -> None:
        self.append(line)

    @property
    def builds(self) -> int:
        return sum(1 for line in self if line.startswith("$ ") and " venv " in line)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("environments")


@pytest.fixture(scope="module")
def base(cache: Path) -> Environment:
    return asyncio.run(Environments(cache).ensure("", log=Lines()))


@pytest.fixture(scope="module")
def with_six(cache: Path) -> Environment:
    return asyncio.run(Environments(cache).ensure(SIX, log=Lines()))


def run_python(environment: Environment, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [environment.python, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_base_environment_runs_the_worker_and_nothing_of_the_server(base, tmp_path):
    assert base.path.is_dir() and Path(base.python).is_file()
    assert "Installed" in base.log_path.read_text()
    ok = run_python(base, "import modelport.runtime.worker, msgspec", tmp_path)
    assert ok.returncode == 0, ok.stderr
    for server_only in ("starlette", "pydantic", "six"):
        missing = run_python(base, f"import {server_only}", tmp_path)
        assert missing.returncode != 0
        assert "ModuleNotFoundError" in missing.stderr


def test_requirements_are_installed_in_their_environment(with_six, base, tmp_path):
    assert with_six.key != base.key
    found = run_python(with_six, "import six, modelport.runtime.worker; print(six.__version__)", tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "1.16.0"


async def test_the_same_requirements_are_built_once(cache, with_six):
    marker_times = {p.name: p.stat().st_mtime_ns for p in with_six.path.iterdir()}
    log = Lines()
    again = await Environments(cache).ensure(SIX, log=log)
    assert again == with_six
    assert log == []
    assert {p.name: p.stat().st_mtime_ns for p in with_six.path.iterdir()} == marker_times


async def test_comments_and_whitespace_do_not_change_the_key(cache, with_six):
    noisy = "# the module's needs\n\n  six==1.16.0   # pinned\r\n\tpackaging\n   \n"
    assert normalise_requirements(noisy) == normalise_requirements(SIX)
    log = Lines()
    assert await Environments(cache).ensure(noisy, log=log) == with_six
    assert log == []


async def test_requirements_without_a_requirement_line_share_the_base_environment(cache, base, with_six):
    skeleton = "# The module's own dependencies, one per line.\n# Pin major versions:\n# six>=1,<2\n"
    bom = "\ufeff"  # what Notepad and PowerShell's `Out-File -Encoding utf8` put first
    environments = Environments(cache)
    for text in (skeleton, "\n \t\r\n\n", bom, bom + skeleton, f"{bom}\n# nothing yet\n"):
        assert normalise_requirements(text) == "", repr(text)
        log = Lines()
        assert await environments.ensure(text, log=log) == base
        assert log == []
    assert normalise_requirements(bom + SIX) == normalise_requirements(SIX)
    assert await environments.ensure(bom + SIX, log=Lines()) == with_six


async def test_different_requirements_have_different_keys(cache):
    environments = Environments(cache)
    keys = {await environments.key(text) for text in ("", "six==1.16.0", "six==1.15.0", "packaging\nsix")}
    assert len(keys) == 4
    assert await environments.key("packaging\nsix") != await environments.key("six\npackaging")


async def test_concurrent_requests_for_one_environment_build_it_once(tmp_path):
    first, second = Environments(tmp_path), Environments(tmp_path)  # the second stands for another process
    logs = [Lines(), Lines(), Lines()]
    built = await asyncio.gather(
        first.ensure("", log=logs[0]), first.ensure("", log=logs[1]), second.ensure("", log=logs[2])
    )
    assert built[0] == built[1] == built[2]
    assert sum(log.builds for log in logs) == 1
    assert built[0].log_path.read_text().count("$ ") == 2


async def test_a_failed_build_names_the_package_and_leaves_nothing(tmp_path):
    environments = Environments(tmp_path)
    log = Lines()
    for _ in range(2):  # a failure is not cached: the second call tries again
        with pytest.raises(BuildFailed) as failure:
            await environments.ensure(f"six\n{MISSING}\n", log=log)
        assert failure.value.code == "build_failed" and failure.value.status == 400
        assert "installing the requirements failed" in failure.value.message
        assert MISSING.partition("==")[0] in failure.value.message
    assert log.builds == 2
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    good = await environments.ensure("", log=Lines())
    assert run_python(good, "import modelport.runtime.worker", tmp_path).returncode == 0


async def test_a_uv_step_over_the_build_timeout_is_stopped_with_its_children(tmp_path):
    children = tmp_path / "children"
    hung_uv = tmp_path / "uv"  # as uv stuck on an index that never answers: it waits on a child of its own
    hung_uv.write_text(f"#!/bin/sh\necho resolving\nsleep 60 &\necho $! > {children}\nwait\n")
    hung_uv.chmod(0o755)
    root = tmp_path / "environments"
    environments = Environments(root, uv=str(hung_uv), build_timeout=0.5)
    log = Lines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BuildFailed) as failure:
        await environments.ensure("", log=log)
    assert loop.time() - started < 5
    assert failure.value.message.startswith(
        "creating the environment took longer than 0.5 s (MODELPORT_BUILD_TIMEOUT_SECONDS) and was stopped"
    )
    assert "resolving" in log
    child = int(children.read_text())
    deadline = loop.time() + 5
    while running(child) and loop.time() < deadline:  # killed with uv's process group
        await asyncio.sleep(0.02)
    assert not running(child)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for init to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_import_check_passes_for_a_working_module(cache, base):
    log = Lines()
    await Environments(cache).check_import(
        base, module_dir=FIXTURES / "echo", entrypoint="inference.py:inference", log=log
    )


async def test_import_check_explains_a_broken_module(cache, base):
    with pytest.raises(BuildFailed) as failure:
        await Environments(cache).check_import(
            base, module_dir=FIXTURES / "import_error", entrypoint="inference.py:inference", log=Lines()
        )
    assert "importing inference.py:inference failed" in failure.value.message
    assert "No module named 'module_that_does_not_exist'" in failure.value.message


async def test_import_check_needs_a_callable_entrypoint(cache, base):
    with pytest.raises(BuildFailed) as failure:
        await Environments(cache).check_import(
            base, module_dir=FIXTURES / "echo", entrypoint="inference.py:predict", log=Lines()
        )
    assert "defines no function `predict`" in failure.value.message


async def test_a_worker_serves_from_inside_its_environment(with_six, tmp_path):
    module = tmp_path / "where"
    module.mkdir()
    (module / "inference.py").write_text(WHERE_AM_I)
    spec = read_api_spec(module, "inference.py:inference")
    launch = WorkerLaunch(
        python=with_six.python,
        config={
            "module_dir": str(module),
            "entrypoint": "inference.py:inference",
            "load": None,
            "spec": spec.to_dict(),
            "default_model_key": "default",
            "models_dir": str(module / "models"),
            "cache_size": 1,
            "output_dir": str(tmp_path / "outputs"),
        },
    )
    lines: list[tuple[str, str]] = []
    pool = WorkerPool(
        PoolConfig(name="where", launch=launch, output_names=spec.output_names),
        log=lambda replica, stream, line: lines.append((stream, line)),
    )
    await pool.start()
    try:
        (outputs,) = await pool.predict(
            [{"text": "hi"}], parameters={}, model_key="default", output_fields=spec.output_names
        )
    finally:
        await pool.close(grace=5)
    assert os.path.samefile(outputs["prefix"], with_six.path), lines
    assert outputs["six"] == "1.16.0"


def test_prune_removes_environments_not_kept(tmp_path):
    kept, dropped = "a" * 64, "b" * 64
    for key in (kept, dropped):
        (tmp_path / key / "bin").mkdir(parents=True)
    building = tmp_path / f"{'c' * 64}.tmp-1234"
    building.mkdir()
    assert Environments(tmp_path).prune({kept}) == [dropped]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted([kept, building.name])


async def test_a_build_waits_for_the_lock_of_another_process(tmp_path):
    holder = open(tmp_path / f"{await Environments(tmp_path).key('')}.lock", "a")  # noqa: SIM115
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(BuildFailed) as failure:
            await Environments(tmp_path, lock_timeout=0.3).ensure("", log=Lines())
        assert "another process kept building" in failure.value.message
    finally:
        holder.close()
    log = Lines()
    await Environments(tmp_path).ensure("", log=log)
    assert log.builds == 1


async def test_a_directory_without_its_marker_is_rebuilt(tmp_path):
    environments = Environments(tmp_path)
    leftover = tmp_path / await environments.key("")
    (leftover / "bin").mkdir(parents=True)
    built = await environments.ensure("", log=Lines())
    assert built.path == leftover
    assert run_python(built, "import modelport.runtime.worker", tmp_path).returncode == 0
