"""A module's code on the platform reaches only what it is handed (`runtime/sandbox.py`).

The `prober` module tries to read, list and write paths and to read the server's environment or signal it; the
server confines every worker it starts for a deployed version.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from drive import push_and_deploy

from modelport.runtime.sandbox import landlock_abi

pytestmark = pytest.mark.skipif(landlock_abi() == 0, reason="this kernel offers no Landlock")


def test_a_deployed_module_reaches_nothing_of_the_server(platform, client, git_module, tmp_path):
    push_and_deploy(client, git_module("prober", tag="v1"), "prober", "v1")
    data = platform.data_dir
    outside = tmp_path / "outside.txt"
    outside.write_text("a file of the server's user, outside anything handed to the module")
    probes = [
        f"read:{data / 'metadata.db'}",
        f"list:{data}",
        f"read:{outside}",
        f"write:{tmp_path / 'planted.txt'}",
        f"write:{tmp_path / 'shared' / 'left.txt'}",  # MODELPORT_WORKER_PATHS
        f"list:{Path.home()}",
        "read:/etc/shadow",
        "environ:",
        "signal:",
        "cwd:",
    ]
    probes += [f"read:{path}" for path in sorted(data.rglob("*")) if path.is_file()][:200]
    probes += [f"list:{path}" for path in sorted(data.rglob("*")) if path.is_dir()][:200]
    response = client.post("/api/v1/modules/prober/predict", json={"inputs": {"probes": "\n".join(probes)}})
    assert response.status_code == 200, response.text
    results = response.json()["outputs"]["results"]

    cwd = results.pop("cwd:")
    assert not Path(cwd).is_relative_to(data) and cwd != os.getcwd(), cwd
    allowed = {probe: outcome for probe, outcome in results.items() if not outcome.startswith("refused")}
    # the version's own code, its environment and its models directory are handed to it; nothing else
    handed = ("versions/prober/", "environments/", "/shared/left.txt")
    unexpected = {probe: outcome for probe, outcome in allowed.items() if not any(h in probe for h in handed)}
    assert unexpected == {}
    assert not (tmp_path / "planted.txt").exists()
    assert results[f"write:{tmp_path / 'shared' / 'left.txt'}"] == "allowed"
    assert results["environ:"].startswith("refused")
    if landlock_abi() >= 6:  # signals are scoped from Linux 6.12
        assert results["signal:"].startswith("refused")
