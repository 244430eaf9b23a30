"""The README and the examples in `docs/` run as part of the test suite, in order, as a new user types them.

Each Markdown file is one Sybil document with one scratch directory, which is also `HOME` (saved logins stay
there), with a copy of the repository's `gallery/` and `.venv/bin` first on `PATH`:

- a ```sh block runs command by command (`\\` continues a line, a here-document stays with its command, `#`
  starts a comment). `cd` and `export` carry
  over to the next commands and blocks. A command that starts a server (`modelport dev`, `modelport server`)
  runs in the background until its health check answers; the next one stops it first, as a user would. Any
  other command must exit 0.
- a ```json block right after a ```sh block is what its last command printed: compared as JSON, where `"..."`,
  `{...}` and `[...]` stand for any value and an object may hold more keys than shown.
- a ```yaml block is a manifest (or several): the platform's own parser must accept it.
- a ```python block runs in the scratch directory.
- a block that cannot run is preceded by `<!-- skip: next "why" -->`.

What the README shows is run as it is written; only these are substituted: the address `127.0.0.1:8000` (each
document gets a free port), the data directories it names under `/srv/`, and `mp_...`, the admin token the
platform was started with.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from modelport.core.manifests import load_documents, parse_document

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "mp_readme-admin-token-0123456789abcdef"
_SERVERS = re.compile(r"^(?:\S+=\S+\s+)*(?:modelport\s+(?:dev|server)\b)")
_ANY = "__readme_any__"
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?\s*$")


@dataclass
class Session:
    """One document's shell: where it is, what it exported, the server it left running."""

    scratch: Path
    port: int
    env: dict[str, str]
    cwd: Path
    server: subprocess.Popen[bytes] | None = None
    output: str = ""
    log: list[str] = field(default_factory=list)

    def substitute(self, text: str) -> str:
        text = text.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        text = text.replace("/srv/", f"{self.scratch}/srv/")
        return re.sub(r"\bmp_\.\.\.", TOKEN, text)

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
        self.server = None


def commands(source: str) -> Iterator[str]:
    """The commands of a shell block: continued lines joined, a here-document kept with its command, comments
    and blank lines dropped."""
    pending, heredoc = "", None
    for line in source.splitlines():
        if heredoc is not None:
            pending += line + "\n"
            if line.strip() == heredoc:
                yield pending
                pending, heredoc = "", None
            continue
        if (opening := _HEREDOC.search(line)) is not None:
            pending, heredoc = line + "\n", opening.group(1)
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            yield command


def run_shell(example: Example) -> str | None:
    session: Session = example.namespace["session"]
    for raw in commands(example.parsed):
        command = session.substitute(raw)
        words = shlex.split(command.splitlines()[0], comments=True)
        if not words:
            continue
        if words[0] == "cd":
            session.cwd = (session.cwd / os.path.expanduser(words[1])).resolve()
            continue
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                session.env[name] = value
            continue
        run = start_server if _SERVERS.match(command) else run_command
        problem = run(session, command)
        if problem is not None:
            return f"{raw}\n{problem}"
    return None


def run_command(session: Session, command: str) -> str | None:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=session.cwd,
        env=session.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    session.output = done.stdout
    session.log.append(f"$ {command}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        return f"exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return None


def start_server(session: Session, command: str) -> str | None:
    session.stop_server()
    log = session.scratch / "server.log"
    with log.open("ab") as output:
        session.server = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=session.cwd,
            env=session.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if session.server.poll() is not None:
            return f"the server exited {session.server.returncode}:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{session.port}/readyz", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return f"the server did not answer within 180 s:\n{log.read_text()[-4000:]}"


def check_json(example: Example) -> str | None:
    session: Session = example.namespace["session"]
    expected = json.loads(re.sub(r"\{\.\.\.\}|\[\.\.\.\]|\"\.\.\.\"", f'"{_ANY}"', example.parsed))
    try:
        actual = json.loads(session.output)
    except json.JSONDecodeError:
        return f"the command before printed no JSON:\n{session.output}"
    difference = _difference(expected, actual, "$")
    return None if difference is None else f"{difference}\nprinted: {session.output}"


def _difference(expected: Any, actual: Any, where: str) -> str | None:
    if expected == _ANY:
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}: no {key!r}"
            if (problem := _difference(value, actual[key], f"{where}.{key}")) is not None:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected {len(expected)} items, got {actual!r}"
        for index, (value, item) in enumerate(zip(expected, actual, strict=True)):
            if (problem := _difference(value, item, f"{where}[{index}]")) is not None:
                return problem
        return None
    return None if expected == actual else f"{where}: expected {expected!r}, got {actual!r}"


def check_yaml(example: Example) -> str | None:
    source = f"{example.path}:{example.line}"
    for index, document in enumerate(load_documents(example.parsed, source=source)):
        parse_document(document, source=source, document=index)
    return None


def setup(namespace: dict[str, Any]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="modelport-readme-"))
    unbuilt = shutil.ignore_patterns("models", "__pycache__")
    shutil.copytree(ROOT / "gallery", scratch / "gallery", ignore=unbuilt)
    # The user's environment (their package index, certificates, proxies), but none of modelport's settings
    # and a home of the document's own, so that saved logins stay in the scratch directory.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MODELPORT_", "XDG_"))}
    env.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    env.update(
        PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        HOME=str(scratch),
        LANG="C.UTF-8",
        COLUMNS="200",
        MODELPORT_PORT=str(_free_port()),
        MODELPORT_BOOTSTRAP_TOKEN=TOKEN,
        GIT_AUTHOR_NAME="Readme",
        GIT_AUTHOR_EMAIL="readme@example.com",
        GIT_COMMITTER_NAME="Readme",
        GIT_COMMITTER_EMAIL="readme@example.com",
    )
    namespace["session"] = Session(scratch=scratch, port=int(env["MODELPORT_PORT"]), env=env, cwd=scratch)
    os.chdir(scratch)  # the python blocks run here too


def teardown(namespace: dict[str, Any]) -> None:
    os.chdir(ROOT)
    session: Session = namespace["session"]
    session.stop_server()
    shutil.rmtree(session.scratch, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


pytest_collect_file = Sybil(
    parsers=[
        SkipParser(),
        CodeBlockParser("sh", run_shell),
        CodeBlockParser("json", check_json),
        CodeBlockParser("yaml", check_yaml),
        PythonCodeBlockParser(),
    ],
    path=str(ROOT),
    patterns=["README.md", "docs/*.md"],
    setup=setup,
    teardown=teardown,
).pytest()

__all__ = ["pytest_collect_file"]
