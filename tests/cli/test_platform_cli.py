"""The platform commands without a server: what `push` refuses before any request, how manifests are read,
and how answers and errors (from a scripted transport) reach stdout, stderr and the exit code."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.cli.platform import DocumentError, read_documents
from modelport.client import Login, load_saved, save_login

ECHO = Path(__file__).parents[1] / "fixtures" / "modules" / "echo"

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("server_url")


def version(name: str = "v1.0.0", **fields: Any) -> dict[str, Any]:
    """A version as the server describes it."""
    base = {
        "module": "echo",
        "name": name,
        "digest": "sha256:00",
        "size": 10,
        "commit": "0123456789abcdef",
        "tag": None,
        "pushed_by": "ann",
        "pushed_at": "2024-05-01T10:20:30+00:00",
        "build_status": "ready",
        "build_error": None,
        "environment": None,
    }
    return base | fields


def module(name: str, deployment: dict[str, Any] | None) -> dict[str, Any]:
    """A module as the server describes it."""
    created = "2024-05-01T10:00:00+00:00"
    return {"name": name, "owner": None, "created_at": created, "deployment": deployment, "versions": 1}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, capture_output=True, check=True)


def repository(root: Path, *, tag: str | None = "v1.0.0") -> Path:
    """The echo module committed at the root of a new repository, HEAD tagged `tag`."""
    shutil.copytree(ECHO, root, ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Add the module")
    if tag:
        git(root, "tag", tag)
    return root


# push refuses before contacting a server


def test_push_refuses_a_dirty_tree(tmp_path: Path, no_server: None) -> None:
    directory = repository(tmp_path / "echo")
    with (directory / "inference.py").open("a", encoding="utf-8") as source:
        source.write("# changed\n")
    result = runner.invoke(app, ["push", str(directory)])
    assert result.exit_code == 2, result.output
    assert "uncommitted changes" in result.stderr
    assert "inference.py" in result.stderr
    assert result.stdout == ""


def test_push_refuses_an_untagged_head(tmp_path: Path, no_server: None) -> None:
    directory = repository(tmp_path / "echo", tag=None)
    result = runner.invoke(app, ["push", str(directory)])
    assert result.exit_code == 2, result.output
    assert "has no tag" in result.stderr
    assert "git tag v1.0.0" in result.stderr


def test_push_outside_git_says_to_pass_version(tmp_path: Path, no_server: None) -> None:
    directory = tmp_path / "echo"
    shutil.copytree(ECHO, directory, ignore=shutil.ignore_patterns("__pycache__"))
    result = runner.invoke(app, ["push", str(directory)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line == (
        f"error: {directory} is not in a git repository: name the version with --version, "
        f"as in `modelport push {directory} --version v1.0.0`"
    )


def test_push_refuses_a_directory_that_is_no_module(tmp_path: Path, no_server: None) -> None:
    result = runner.invoke(app, ["push", str(tmp_path), "--version", "v1"])
    assert result.exit_code == 2, result.output
    assert "error" in result.stderr


def test_push_says_how_to_log_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: None) -> None:
    monkeypatch.delenv("MODELPORT_URL")
    monkeypatch.delenv("MODELPORT_TOKEN")
    result = runner.invoke(app, ["push", str(repository(tmp_path / "echo"))])
    assert result.exit_code == 2
    assert "not logged in: run `modelport login URL --token T`" in result.stderr


def test_push_of_a_good_module_reaches_for_the_server(tmp_path: Path, server_url: str) -> None:
    """The same setup with a clean, tagged tree does contact the server, and fails differently."""
    result = runner.invoke(app, ["push", str(repository(tmp_path / "echo"))])
    assert result.exit_code == 1
    assert f"cannot reach {server_url}" in result.stderr


def test_push_uploads_and_prints_the_version(tmp_path: Path, answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(201, json=version()))
    result = runner.invoke(app, ["push", str(repository(tmp_path / "echo"))])
    assert result.exit_code == 0, result.output
    assert result.stdout == "v1.0.0\n"
    assert "pushed echo v1.0.0" in result.stderr
    params = seen[0].url.params
    assert (params["version"], params["tag"], len(params["commit"])) == ("v1.0.0", "v1.0.0", 40)
    assert seen[0].headers["X-Content-Digest"].startswith("sha256:")


def test_push_quiet_prints_only_the_version(tmp_path: Path, answer: Any) -> None:
    built = version(spec={}, manifest={})
    answer(lambda r: httpx.Response(201 if r.method == "POST" else 200, json=built))
    result = runner.invoke(app, ["push", str(repository(tmp_path / "echo")), "--quiet", "--wait"])
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("v1.0.0\n", "")


def test_push_wait_reports_a_failed_build(tmp_path: Path, answer: Any) -> None:
    failed = version(build_status="failed", build_error="no such package", spec={}, manifest={})

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201 if request.method == "POST" else 200, json=failed)

    answer(handle)
    result = runner.invoke(app, ["push", str(repository(tmp_path / "echo")), "--wait"])
    assert result.exit_code == 1
    assert "the build of echo v1.0.0 failed: no such package" in result.stderr


# Manifest documents


MODULE = "kind: Module\nmetadata:\n  name: echo\n"
ROUTE = "kind: Route\nmetadata:\n  name: r\n"


def test_documents_from_a_file_skip_empty_ones(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(f"---\n{MODULE}---\n---\n# only a comment\n---\n{ROUTE}", encoding="utf-8")
    documents = read_documents([str(path)], stdin=io.StringIO())
    assert [d["kind"] for d in documents] == ["Module", "Route"]


def test_documents_from_a_directory_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(ROUTE, encoding="utf-8")
    (tmp_path / "a.yaml").write_text(MODULE, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("kind: Ignored\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("kind: Nested\n", encoding="utf-8")
    documents = read_documents([str(tmp_path)], stdin=io.StringIO())
    assert [d["kind"] for d in documents] == ["Module", "Route"]


def test_documents_from_stdin_and_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MODULE, encoding="utf-8")
    documents = read_documents(["-", str(tmp_path / "m.yaml")], stdin=io.StringIO(ROUTE))
    assert [d["kind"] for d in documents] == ["Route", "Module"]


def test_dates_stay_strings() -> None:
    documents = read_documents(["-"], stdin=io.StringIO("kind: Module\nsince: 2024-05-01\n"))
    assert documents[0]["since"] == "2024-05-01"
    json.dumps(documents)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{MODULE}---\nkind: [unclosed\n", "<stdin>: line 6, column 1: not valid YAML"),
        ("kind: Module\n  bad: indent\n", "<stdin>: line 2, column 6: not valid YAML"),
        ("- a list\n", "<stdin>: document 1: expected a mapping"),
        ("", "no documents in -"),
        ("kind: !!binary aGk=\n", "JSON cannot carry"),
        ("kind: !!python/object:os.system {}\n", "<stdin>: line 1, column 7: not valid YAML"),
    ],
)
def test_unreadable_documents_are_explained(text: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        read_documents(["-"], stdin=io.StringIO(text))
    assert message in str(caught.value)


def test_missing_sources_are_explained(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file or directory"):
        read_documents([str(tmp_path / "missing.yaml")], stdin=io.StringIO())
    with pytest.raises(DocumentError, match=r"holds no \.yaml or \.yml files"):
        read_documents([str(tmp_path)], stdin=io.StringIO())


def test_apply_names_the_file_and_line_of_a_syntax_error(tmp_path: Path, no_server: None) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: Module\nmetadata:\n  name: [echo\n", encoding="utf-8")
    result = runner.invoke(app, ["apply", "-f", str(path)])
    assert result.exit_code == 2
    assert f"{path}: line 4, column 1: not valid YAML" in result.stderr


def test_apply_sends_stdin_and_prints_a_line_per_result(answer: Any) -> None:
    results = [
        {"kind": "Module", "name": "echo", "action": "configured", "diff": "- replicas: 1\n+ replicas: 2\n"},
        {"kind": "Route", "name": "r", "action": "unchanged", "diff": ""},
    ]
    seen = answer(lambda r: httpx.Response(200, json={"results": results}))
    result = runner.invoke(app, ["apply", "-f", "-", "--dry-run"], input=MODULE + "---\n" + ROUTE)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Module/echo configured (dry run)\nRoute/r unchanged (dry run)\n"
    body = json.loads(seen[0].content)
    assert body == {"documents": [yaml.safe_load(MODULE), yaml.safe_load(ROUTE)], "dry_run": True}

    result = runner.invoke(app, ["diff", "-f", "-"], input=MODULE)
    assert result.stdout == "Module/echo configured\n- replicas: 1\n+ replicas: 2\nRoute/r unchanged\n"
    assert json.loads(seen[1].content)["dry_run"] is True


def test_apply_says_when_it_scales_a_deployment(answer: Any) -> None:
    scaled = {
        "kind": "Module",
        "name": "echo",
        "action": "configured",
        "diff": "",
        "message": "scaled to 2 replicas",
    }
    answer(lambda r: httpx.Response(200, json={"results": [scaled]}))
    result = runner.invoke(app, ["apply", "-f", "-"], input=MODULE)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Module/echo configured, scaled to 2 replicas\n"
    result = runner.invoke(app, ["apply", "-f", "-", "--dry-run"], input=MODULE)
    assert result.stdout == "Module/echo configured, scaled to 2 replicas (dry run)\n"


def test_diff_exits_1_when_something_would_change(answer: Any) -> None:
    """As `diff` and `kubectl diff`: 0 nothing would change, 1 something would, more than 1 an error."""
    same = {"kind": "Module", "name": "echo", "action": "unchanged", "diff": ""}
    changed = {"kind": "Module", "name": "echo", "action": "configured", "diff": "- a\n+ b\n"}
    for results, code in (([same], 0), ([same, changed | {"name": "other"}], 1)):
        answer(lambda r, results=results: httpx.Response(200, json={"results": results}))
        assert runner.invoke(app, ["diff", "-f", "-"], input=MODULE).exit_code == code
    body = {"error": {"code": "some_code", "message": "it went wrong", "details": None}}
    for status in (404, 422, 500):
        answer(lambda r, status=status: httpx.Response(status, json=body))
        result = runner.invoke(app, ["diff", "-f", "-"], input=MODULE)
        assert (result.exit_code, result.stderr) == (2, "error: it went wrong (some_code)\n")


def test_diff_that_cannot_reach_the_server_exits_2(server_url: str) -> None:
    result = runner.invoke(app, ["diff", "-f", "-"], input=MODULE)
    assert result.exit_code == 2
    assert "cannot reach" in result.stderr


# Answers and errors


def deployment(**fields: Any) -> dict[str, Any]:
    base = {
        "module": "echo",
        "version": "v1",
        "target_version": "v2",
        "previous_version": "v0",
        "canary_version": None,
        "canary_percent": 0,
        "replicas": 2,
        "generation": 3,
        "observed_generation": 2,
        "status": "progressing",
        "message": "starting workers",
        "updated_at": "2024-01-01T00:00:00Z",
        "serving": [],
    }
    return base | fields


def test_deploy_prints_one_line(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(202, json=deployment()))
    result = runner.invoke(app, ["deploy", "echo", "v2", "--replicas", "2", "--canary", "10"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "echo: v2 progressing, generation 3\n"
    assert json.loads(seen[0].content) == {"version": "v2", "replicas": 2, "canary_percent": 10}


def test_deploy_of_a_canary_says_what_the_canary_takes(answer: Any) -> None:
    """A canary leaves the active version in place: no version is rolled out, so none is named as such."""
    canary = deployment(target_version=None, canary_version="v2", canary_percent=10)
    answer(lambda r: httpx.Response(202, json=canary))
    result = runner.invoke(app, ["deploy", "echo", "v2", "--canary", "10"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "echo: canary v2 at 10 % of calls, progressing, generation 3\n"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"status": "ready", "replicas": 1}, "echo: v1 ready, 1 replica"),
        (
            {"status": "ready", "canary_version": "v2", "canary_percent": 5},
            "echo: v1 ready, 2 replicas, canary v2 at 5 % of calls",
        ),
        ({"target_version": None}, "echo: v1 progressing, generation 3"),
        (
            {"canary_version": "v3", "canary_percent": 20},
            "echo: v2 progressing, generation 3, canary v3 at 20 % of calls",
        ),
    ],
)
def test_deploy_and_rollback_lines_name_no_none(answer: Any, fields: dict[str, Any], line: str) -> None:
    answer(lambda r: httpx.Response(202, json=deployment(**fields)))
    for command in (["deploy", "echo", "v2"], ["rollback", "echo"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        assert result.stdout == line + "\n"


def test_deploy_wait_fails_with_the_deployment_message(answer: Any) -> None:
    failed = deployment(observed_generation=3, status="failed", message="setup failed: no model")

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=deployment())
        return httpx.Response(200, json=module("echo", failed))

    answer(handle)
    result = runner.invoke(app, ["deploy", "echo", "v2", "--wait"])
    assert result.exit_code == 1
    assert "the rollout of echo failed: setup failed: no model" in result.stderr


def test_deploy_wait_fails_with_the_failed_rollout_and_says_what_serves(answer: Any) -> None:
    rollout = {"version": "v2", "status": "failed", "message": "warm-up example failed: boom"}
    settled = deployment(
        observed_generation=3, status="ready", target_version=None, message="", rollout=rollout
    )

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=deployment())
        return httpx.Response(200, json=module("echo", settled))

    answer(handle)
    result = runner.invoke(app, ["deploy", "echo", "v2", "--wait"])
    assert result.exit_code == 1
    assert "the rollout of echo v2 failed: warm-up example failed: boom; v1 keeps serving" in result.stderr


def test_deploy_wait_times_out_with_the_deployment_message(answer: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=deployment())
        return httpx.Response(200, json=module("echo", deployment()))

    answer(handle)
    result = runner.invoke(app, ["rollback", "echo", "--wait", "--timeout", "0.1"])
    assert result.exit_code == 1
    assert "did not finish within 0.1 s: starting workers" in result.stderr


@pytest.mark.parametrize(("status", "code"), [(400, 2), (422, 2), (404, 1), (409, 1), (500, 1)])
def test_api_errors_exit_by_status(answer: Any, status: int, code: int) -> None:
    body = {"error": {"code": "some_code", "message": "it went wrong", "details": None}}
    answer(lambda r: httpx.Response(status, json=body))
    result = runner.invoke(app, ["rollback", "echo"])
    assert result.exit_code == code
    assert result.stderr == "error: it went wrong (some_code)\n"
    assert result.stdout == ""


def test_get_modules_in_every_format(answer: Any) -> None:
    serving = [{"version": "v1", "role": "active", "workers": 2, "ready": True}]
    rollout = {"version": "v2", "status": "progressing", "message": "starting workers"}
    modules = [
        module("echo", deployment(canary_version="v3", canary_percent=10, serving=serving, rollout=rollout)),
        module("idle", None),
    ]
    answer(lambda r: httpx.Response(200, json={"modules": modules}))
    table = runner.invoke(app, ["get", "modules"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SERVING", "CANARY", "REPLICAS", "STATUS", "ROLLOUT", "MESSAGE"]
    assert lines[1].split() == [
        *("echo", "v1", "v3", "(10%)", "2", "progressing", "v2", "progressing", "starting", "workers")
    ]
    assert lines[2].split() == ["idle", "-", "-", "-", "not", "deployed", "-"]
    assert json.loads(runner.invoke(app, ["get", "modules", "-o", "json"]).stdout) == modules
    assert yaml.safe_load(runner.invoke(app, ["get", "modules", "-o", "yaml"]).stdout) == modules
    assert runner.invoke(app, ["get", "modules", "-o", "xml"]).exit_code == 2


def test_piped_tables_print_whole_cells_separated_by_tabs(answer: Any) -> None:
    """Off a terminal (CliRunner's stdout is not one), a narrow width never cuts a long value, and a cell's
    own tabs and line breaks become spaces."""
    message = "setup failed: model weights not found under models/receipt-ocr/v2/default-weights/"
    modules = [
        module("receipt-ocr-with-a-long-name", deployment(status="failed", message=message + "\n\tat load")),
        module("idle", None),
    ]
    answer(lambda r: httpx.Response(200, json={"modules": modules}))
    result = runner.invoke(app, ["get", "modules"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME\tSERVING\tCANARY\tREPLICAS\tSTATUS\tROLLOUT\tMESSAGE",
        f"receipt-ocr-with-a-long-name\t-\t-\t2\tfailed\t-\t{message}  at load",  # one line, one cell
        "idle\t-\t-\t-\tnot deployed\t-\t",
    ]


def test_a_url_given_alone_uses_the_saved_token(answer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same server under another host name: `MODELPORT_URL` overrides only the URL of the saved login."""
    save_login(Login("http://modelport.internal:8000", "mp_saved"))
    monkeypatch.delenv("MODELPORT_TOKEN")
    seen = answer(lambda r: httpx.Response(200, json={"modules": []}))
    result = runner.invoke(app, ["get", "modules"])
    assert result.exit_code == 0, result.output
    assert seen[0].headers["Authorization"] == "Bearer mp_saved"
    assert str(seen[0].url).startswith(os.environ["MODELPORT_URL"])


def test_get_versions_marks_the_deployed_ones(answer: Any) -> None:
    versions = [version(name) for name in ("v3", "v2", "v1", "v0")]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/versions"):
            return httpx.Response(200, json={"versions": versions})
        return httpx.Response(200, json=module("echo", deployment(canary_version="v3")))

    answer(handle)
    result = runner.invoke(app, ["get", "versions", "echo"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["VERSION", "STATUS", "DEPLOYED", "COMMIT", "PUSHED", "BY", "PUSHED", "AT"]
    assert rows[1] == ["v3", "ready", "canary", "0123456789ab", "ann", "2024-05-01", "10:20:30"]
    assert rows[2] == ["v2", "ready", "0123456789ab", "ann", "2024-05-01", "10:20:30"]
    assert rows[3][:3] == ["v1", "ready", "active"]
    assert rows[4][:3] == ["v0", "ready", "previous"]


def test_logs_print_the_text(answer: Any) -> None:
    seen = answer(lambda r: httpx.Response(200, text="building\ndone"))
    result = runner.invoke(app, ["logs", "echo", "--build", "v1"])
    assert result.stdout == "building\ndone\n"
    assert dict(seen[0].url.params) == {"build": "v1"}


def test_login_checks_the_token_then_saves_it(answer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_URL")
    monkeypatch.delenv("MODELPORT_TOKEN")
    refused = {"error": {"code": "unauthorized", "message": "bad token", "details": None}}
    answer(lambda r: httpx.Response(401, json=refused))
    result = runner.invoke(app, ["login", "http://platform.test", "--token", "wrong"])
    assert result.exit_code == 1
    assert "the server refused the token" in result.stderr
    assert load_saved() is None

    caller = {"id": 1, "name": "ann", "role": "admin", "groups": [], "source": "local", "token_id": 2}
    seen = answer(lambda r: httpx.Response(200, json=caller))
    result = runner.invoke(app, ["login", "http://platform.test/", "--token", "right"])
    assert result.exit_code == 0, result.output
    assert "right" not in result.output  # the token is not echoed
    assert seen[0].headers["Authorization"] == "Bearer right"
    saved = load_saved()
    assert saved is not None
    assert (saved.url, saved.token) == ("http://platform.test", "right")


def test_login_refuses_a_url_that_is_not_http(no_server: None) -> None:
    result = runner.invoke(app, ["login", "platform.test", "--token", "t"])
    assert result.exit_code == 2
    assert "must start with http:// or https://" in result.stderr


# End to end: the commands against a real platform server


def ok(*args: str) -> Any:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


def predict(platform: Any, text: str) -> httpx.Response:
    response = httpx.post(
        f"{platform.url}/api/v1/modules/echo/predict",
        json={"inputs": {"text": text}},
        headers={"Authorization": f"Bearer {platform.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


@pytest.mark.slow
def test_push_deploy_and_roll_back_from_the_command_line(
    platform: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPORT_URL")
    monkeypatch.delenv("MODELPORT_TOKEN")
    ok("login", platform.url, "--token", platform.token)

    directory = repository(tmp_path / "echo")
    assert ok("push", str(directory), "--wait", "--timeout", "90").stdout == "v1.0.0\n"
    assert ok("push", str(directory)).stdout == "v1.0.0\n"  # the same content again is harmless
    (version,) = json.loads(ok("get", "versions", "echo", "-o", "json").stdout)
    assert (version["name"], version["build_status"]) == ("v1.0.0", "ready")
    assert len(version["commit"]) == 40

    assert ok("deploy", "echo", "v1.0.0", "--wait", "--timeout", "60").stdout.startswith("echo: v1.0.0 ready")
    (module,) = json.loads(ok("get", "modules", "-o", "json").stdout)
    deployment = module["deployment"]
    assert (deployment["version"], deployment["status"]) == ("v1.0.0", "ready")
    assert any(
        s["version"] == "v1.0.0" and s["role"] == "active" and s["ready"] for s in deployment["serving"]
    )
    assert ok("get", "modules").stdout.splitlines()[1].split()[:2] == ["echo", "v1.0.0"]
    response = predict(platform, "hi")
    assert response.headers["X-Model-Version"] == "v1.0.0"
    assert response.json()["outputs"]["text"] == "hi"

    with (directory / "inference.py").open("a", encoding="utf-8") as source:
        source.write("# v2\n")
    git(directory, "commit", "-q", "-am", "Change the module")
    git(directory, "tag", "v2.0.0")
    assert ok("push", str(directory), "--wait", "--timeout", "90").stdout == "v2.0.0\n"
    ok("deploy", "echo", "v2.0.0", "--wait", "--timeout", "60")
    assert predict(platform, "hi").headers["X-Model-Version"] == "v2.0.0"
    rows = [line.split() for line in ok("get", "versions", "echo").stdout.splitlines()[1:]]
    assert [row[:3] for row in rows] == [["v2.0.0", "ready", "active"], ["v1.0.0", "ready", "previous"]]

    assert ok("rollback", "echo", "--wait", "--timeout", "60").stdout.startswith("echo: v1.0.0 ready")
    assert predict(platform, "hi").headers["X-Model-Version"] == "v1.0.0"

    assert ok("logs", "echo", "--build", "v2.0.0").stdout.strip()
    missing = runner.invoke(app, ["logs", "nope"])
    assert missing.exit_code == 1
    assert "(module_not_found)" in missing.stderr
