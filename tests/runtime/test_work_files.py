"""Work files that crashed requests and failed calls leave behind are removed once no call can need them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from modelport.runtime.files import WORK_FILES_SECONDS, remove_stale


def age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def test_only_entries_older_than_the_limit_go(tmp_path: Path) -> None:
    old_dir = tmp_path / "old-request"
    (old_dir / "nested").mkdir(parents=True)
    (old_dir / "nested" / "upload.png").write_bytes(b"x")
    age(old_dir, 7200)
    (tmp_path / "output.bin").write_bytes(b"y")
    age(tmp_path / "output.bin", 7200)
    fresh = tmp_path / "in-flight"
    fresh.mkdir()
    link = tmp_path / "link"
    link.symlink_to("/etc")  # a link is removed as a link: nothing outside the folder is touched
    age(link, 7200)

    removed = remove_stale(tmp_path, older_than=3600, now=time.time())

    assert removed == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in-flight"]
    assert Path("/etc").is_dir()


def test_a_missing_folder_is_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_stale(tmp_path / "never-made", older_than=0, now=time.time()) == 0


async def test_the_platform_sweeps_uploads_and_outputs(platform_app: Any) -> None:
    services = platform_app.server.services
    data_dir = platform_app.server.settings.data_dir
    for folder in ("uploads", "outputs"):
        (data_dir / folder).mkdir(exist_ok=True)
        (data_dir / folder / "left-by-a-crash").write_bytes(b"z")
        (data_dir / folder / "of-a-call-now").write_bytes(b"z")
    later = time.time() + WORK_FILES_SECONDS - 60  # the files just made are not old enough yet
    assert services.sweep_work_files(now=later) == 0
    for folder in ("uploads", "outputs"):
        age(data_dir / folder / "left-by-a-crash", WORK_FILES_SECONDS + 1)
    assert services.sweep_work_files() == 2
    assert sorted(p.name for p in (data_dir / "uploads").iterdir()) == ["of-a-call-now"]
    assert sorted(p.name for p in (data_dir / "outputs").iterdir()) == ["of-a-call-now"]
