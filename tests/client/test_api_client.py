"""`Client` against a scripted transport: the requests it sends, the errors it raises, the waits it does."""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any

import httpx
import pytest
from recording import Handler

import modelport.client
from modelport.client import (
    ApiError,
    ApplyResult,
    Client,
    ConnectionFailed,
    DeploymentInfo,
    LogGap,
    ModuleInfo,
    RolloutInfo,
    VersionInfo,
    WaitTimeout,
)


def deployment(**fields: Any) -> dict[str, Any]:
    base = {
        "module": "echo",
        "version": "v1",
        "target_version": "v1",
        "previous_version": None,
        "canary_version": None,
        "canary_percent": 0,
        "replicas": 1,
        "generation": 1,
        "observed_generation": 1,
        "status": "ready",
        "message": "",
        "updated_at": "2024-01-01T00:00:00Z",
        "serving": [],
    }
    return base | fields


def version(**fields: Any) -> dict[str, Any]:
    base = {
        "module": "echo",
        "name": "v1",
        "digest": "sha256:00",
        "size": 10,
        "commit": None,
        "tag": None,
        "pushed_by": "ana",
        "pushed_at": "2024-01-01T00:00:00Z",
        "build_status": "ready",
        "build_error": None,
        "environment": None,
    }
    return base | fields


def module(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "echo", "owner": None, "created_at": "", "deployment": deployment, "versions": 1}


def test_the_exports_are_pinned() -> None:
    assert sorted(modelport.client.__all__) == sorted(
        [
            "DEFAULT_TIMEOUT",
            "AccessToken",
            "ApiError",
            "ApplyResult",
            "AuditEvent",
            "BucketInfo",
            "CallerInfo",
            "Client",
            "ClientError",
            "ConfigError",
            "ConnectionFailed",
            "DeploymentInfo",
            "DriftFeature",
            "DriftReport",
            "GroupInfo",
            "LogGap",
            "LogLine",
            "Login",
            "ModuleInfo",
            "NewToken",
            "NotLoggedIn",
            "ObjectInfo",
            "ObjectListing",
            "PipelineInfo",
            "PipelineStepInfo",
            "PresignedUrl",
            "RequestDetail",
            "RequestList",
            "RequestRecord",
            "Progress",
            "Pushed",
            "Role",
            "RolloutInfo",
            "ServingInfo",
            "TokenInfo",
            "TransferFailed",
            "UserInfo",
            "VersionDetail",
            "VersionInfo",
            "WaitTimeout",
            "config_path",
            "load_saved",
            "resolve_login",
            "save_login",
        ]
    )
    for name in modelport.client.__all__:
        assert getattr(modelport.client, name) is not None


def test_reads_send_the_token_under_the_base_path(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json={"modules": [module()]}))
    assert client.modules() == [ModuleInfo.model_validate(module())]
    request = seen.requests[0]
    assert request.method == "GET"
    assert str(request.url) == "http://platform.test/base/api/v1/modules"
    assert request.headers["Authorization"] == "Bearer tok"


def test_names_are_quoted_into_the_path(client_for: Any) -> None:
    detail = version(spec={}, manifest={})
    client, seen = client_for(lambda r: httpx.Response(200, json=detail))
    assert client.version("a/b", "v1+build").spec == {}
    assert seen.requests[0].url.raw_path == b"/base/api/v1/modules/a%2Fb/versions/v1%2Bbuild"


def test_push_streams_the_artifact_with_its_digest(client_for: Any) -> None:
    data = bytes(range(256)) * 1000
    info = version()
    client, seen = client_for(lambda r: httpx.Response(201, json=info))
    reported: list[tuple[int, int]] = []
    pushed = client.push(
        data,
        module="echo",
        version="v1",
        commit="abc",
        progress=lambda sent, total: reported.append((sent, total)),
    )
    assert pushed.created
    assert pushed.version == VersionInfo.model_validate(info)
    request = seen.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/base/api/v1/modules/echo/versions"
    assert dict(request.url.params) == {"version": "v1", "commit": "abc"}
    assert request.headers["Content-Type"] == "application/gzip"
    assert request.headers["Content-Length"] == str(len(data))
    assert request.headers["X-Content-Digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert request.content == data
    assert reported[0] == (0, len(data))
    assert reported[-1] == (len(data), len(data))
    assert len(reported) > 2


def test_pushing_the_same_content_again_is_not_a_creation(client_for: Any) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, json=version()))
    assert not client.push(b"x", module="echo", version="v1").created


def test_deploy_sends_only_what_is_given(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(202, json=deployment()))
    client.deploy("echo", "v2")
    client.deploy("echo", "v3", replicas=2, canary=10)
    assert json.loads(seen.requests[0].content) == {"version": "v2"}
    assert json.loads(seen.requests[1].content) == {"version": "v3", "replicas": 2, "canary_percent": 10}


def test_logs_ask_for_a_build_or_filtered_lines(client_for: Any) -> None:
    line = {
        "time": "2026-01-02T03:04:05.678Z",
        "version": "v1",
        "replica": 0,
        "stream": "stdout",
        "request_ids": ["r1"],
        "line": "hello",
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if "build" in request.url.params:
            return httpx.Response(200, text="line\n")
        return httpx.Response(200, json={"lines": [line]})

    client, seen = client_for(answer)
    assert client.build_log("echo", "v1") == "line\n"
    (got,) = client.logs("echo", tail=5, replica=0, since="10m", request_id="r1")
    assert got.line == "hello" and got.request_ids == ["r1"]
    assert dict(seen.requests[0].url.params) == {"build": "v1"}
    query = {"tail": "5", "replica": "0", "since": "10m", "request_id": "r1"}
    assert dict(seen.requests[1].url.params) == query


def test_following_logs_reads_the_events(client_for: Any) -> None:
    line = {"time": "t", "version": "v1", "replica": 1, "stream": "stderr", "request_ids": [], "line": "x"}
    events = (
        f": following\n\ndata: {json.dumps(line)}\n\n: heartbeat\n\n"
        f'event: gap\ndata: {{"dropped": 3}}\n\nevent: other\ndata: {{}}\n\ndata: {json.dumps(line)}\n\n'
    )
    client, seen = client_for(
        lambda r: httpx.Response(200, text=events, headers={"Content-Type": "text/event-stream"})
    )
    got = list(client.follow_logs("echo", version="v1", tail=1))
    assert [type(item).__name__ for item in got] == ["LogLine", "LogGap", "LogLine"]
    assert got[1] == LogGap(dropped=3) and got[2].replica == 1
    request = seen.requests[0]
    assert dict(request.url.params) == {"version": "v1", "tail": "1", "follow": "true"}
    assert request.headers["Accept"] == "text/event-stream"


def test_apply_diff_and_delete_send_documents(client_for: Any) -> None:
    results = [{"kind": "Module", "name": "echo", "action": "created", "diff": ""}]
    client, seen = client_for(lambda r: httpx.Response(200, json={"results": results}))
    documents = [{"kind": "Module", "metadata": {"name": "echo"}}]
    assert client.apply(documents) == [ApplyResult.model_validate(r) for r in results]
    client.diff(documents)
    client.delete(documents, dry_run=True)
    sent = [(r.url.path, json.loads(r.content)) for r in seen.requests]
    assert sent == [
        ("/base/api/v1/apply", {"documents": documents, "dry_run": False}),
        ("/base/api/v1/apply", {"documents": documents, "dry_run": True}),
        ("/base/api/v1/delete", {"documents": documents, "dry_run": True}),
    ]


def test_delete_module_takes_an_empty_answer(client_for: Any) -> None:
    client, seen = client_for(lambda r: httpx.Response(204))
    assert client.delete_module("echo") is None
    assert seen.requests[0].method == "DELETE"


def test_error_bodies_become_api_errors(client_for: Any) -> None:
    body = {"error": {"code": "version_exists", "message": "v1 exists", "details": {"digest": "x"}}}
    client, _ = client_for(lambda r: httpx.Response(409, json=body))
    with pytest.raises(ApiError) as caught:
        client.push(b"x", module="echo", version="v1")
    error = caught.value
    assert (error.status, error.code, error.message, error.details) == (
        409,
        "version_exists",
        "v1 exists",
        {"digest": "x"},
    )
    assert str(error) == "v1 exists (version_exists)"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html><body>Bad gateway</body></html>"),
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(500),
    ],
)
def test_other_error_bodies_fall_back_to_the_status(client_for: Any, response: httpx.Response) -> None:
    client, _ = client_for(lambda r: response)
    with pytest.raises(ApiError) as caught:
        client.modules()
    assert caught.value.code == f"http_{response.status_code}"
    assert caught.value.message.startswith(f"{response.status_code} {response.reason_phrase}")


def test_a_success_that_is_not_json_is_an_error(client_for: Any) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(ApiError, match="not JSON"):
        client.modules()


def test_an_answer_that_is_not_the_record_is_an_error(client_for: Any) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, json=deployment(status="sleeping")))
    with pytest.raises(ApiError, match=r"not a DeploymentInfo \(status: ") as caught:
        client.rollback("echo")
    assert (caught.value.status, caught.value.code) == (200, "invalid_response")


def test_fields_a_newer_server_adds_are_ignored(client_for: Any) -> None:
    newer = module(
        deployment(
            region="eu",
            serving=[{"version": "v1", "role": "active", "workers": 1, "ready": True, "gpu": "a100"}],
        )
    )
    client, _ = client_for(lambda r: httpx.Response(200, json=newer | {"labels": {"team": "a"}}))
    found = client.module("echo")
    assert found.deployment is not None and found.deployment.serving[0].ready
    assert "labels" not in found.model_dump() and "region" not in found.deployment.model_dump()


def test_an_unreachable_server_names_its_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "tok") as client, pytest.raises(ConnectionFailed) as caught:
        client.modules()
    assert f"http://127.0.0.1:{port}" in str(caught.value)


def scripted(answers: list[dict[str, Any]]) -> Handler:
    """Answer each poll with the next module state, repeating the last."""
    states = iter(answers)
    last: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        state = next(states, None)
        if state is not None:
            last[:] = [state]
        return httpx.Response(200, json=last[0])

    return handle


def test_wait_deployment_waits_for_the_generation_to_settle(client_for: Any) -> None:
    answers = [
        module(None),
        module(deployment(generation=2, observed_generation=1, status="ready")),
        module(deployment(generation=2, observed_generation=2, status="progressing")),
        module(deployment(generation=2, observed_generation=2, status="ready", version="v2")),
    ]
    client, seen = client_for(scripted(answers))
    settled = client.wait_deployment("echo", 2, timeout=10, poll=0)
    assert settled.version == "v2"
    assert len(seen.requests) == 4


def test_wait_deployment_returns_a_failure(client_for: Any) -> None:
    failed = deployment(generation=2, observed_generation=2, status="failed", message="setup failed")
    client, _ = client_for(scripted([module(failed)]))
    assert client.wait_deployment("echo", 2, timeout=10, poll=0).message == "setup failed"


def test_wait_deployment_settles_ready_with_a_failed_rollout(client_for: Any) -> None:
    """A new version that failed while the old one serves: `ready`, and the rollout says what failed; an
    answer without `rollout` (a server before it) reads as None."""
    rollout = {"version": "v2", "status": "failed", "message": "warm-up example failed: boom"}
    settled = deployment(generation=2, observed_generation=2, status="ready", rollout=rollout)
    client, _ = client_for(scripted([module(settled)]))
    assert client.wait_deployment("echo", 2, timeout=10, poll=0).rollout == RolloutInfo(
        version="v2", status="failed", message="warm-up example failed: boom"
    )
    assert DeploymentInfo.model_validate(deployment()).rollout is None


def test_wait_deployment_times_out_with_the_last_state(client_for: Any) -> None:
    going = deployment(
        generation=2, observed_generation=2, status="progressing", message="1 of 2 workers ready"
    )
    client, _ = client_for(scripted([module(going)]))
    with pytest.raises(WaitTimeout, match="1 of 2 workers ready") as caught:
        client.wait_deployment("echo", 2, timeout=0.05, poll=0.01)
    assert caught.value.last == DeploymentInfo.model_validate(going)


def test_wait_build_polls_until_settled(client_for: Any) -> None:
    answers = [version(build_status=s, spec={}, manifest={}) for s in ("pending", "building", "failed")]
    client, seen = client_for(scripted(answers))
    assert client.wait_build("echo", "v1", timeout=10, poll=0).build_status == "failed"
    assert len(seen.requests) == 3
    client, _ = client_for(scripted([version(build_status="building", spec={}, manifest={})]))
    with pytest.raises(WaitTimeout, match="did not finish within"):
        client.wait_build("echo", "v1", timeout=0.05, poll=0.01)
