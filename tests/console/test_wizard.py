"""The new-module wizard: the docstring previewed from the form, and the `modelport init` tree to download.

The download is checked as a developer would use it: unpacked, read and packed as `modelport push` does, its
own tests run, and pushed to the platform, where it builds, warms up with its manifest's example and answers.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from console_world import ConsoleSession, World
from drive import deploy, push, wait_built, wait_deployment

from modelport.artifacts import pack, read_module
from modelport.artifacts.scaffold import create_module
from modelport.core.manifests import load_module_manifest
from modelport.sdk import parse_docstring

pytestmark = pytest.mark.timeout(90)

# What the form below declares, as the docstring grammar reads it.
EXPECTED_DOCSTRING = """Find "cats" in photos.

Counts the cats in a C:\\photos folder.

:param inputs.text: The caption <b>
:type inputs.text: str, min 1

:param inputs.limit: How many at most
:type inputs.limit: int, optional

:param parameters.language: The language
:type parameters.language: str, default "eng"

:param parameters.threshold: How sure to be
:type parameters.threshold: float, default 0.5, min 0, max 1

:param outputs.count: How many cats
:type outputs.count: int

:param outputs.labels: Their names
:type outputs.labels: list[str]

:param outputs.mode: How they were found
:type outputs.mode: str, one of ["fast", "slow"]
"""


def _form(name: str = "cat-counter", **changes: str) -> dict[str, str]:
    form = {
        "name": name,
        "title": 'Find "cats" in photos.',
        "description": "Counts the cats in a C:\\photos folder.",
        "inputs-0-name": "text",
        "inputs-0-type": "str, min 1",
        "inputs-0-description": "The caption <b>",
        "inputs-3-name": "limit",
        "inputs-3-type": "int",
        "inputs-3-optional": "1",
        "inputs-3-description": "How many at most",
        "inputs-4-name": "",  # a blank row is left out
        "parameters-0-name": "language",
        "parameters-0-default": "eng",  # plain text for a str
        "parameters-0-description": "The language",
        "parameters-1-name": "threshold",
        "parameters-1-type": "float, min 0, max 1",
        "parameters-1-default": "0.5",
        "parameters-1-description": "How sure to be",
        "outputs-0-name": "count",
        "outputs-0-type": "int",
        "outputs-0-description": "How many cats",
        "outputs-1-name": "labels",
        "outputs-1-type": "list[str]",
        "outputs-1-description": "Their names",
        "outputs-2-name": "mode",
        "outputs-2-type": 'str, one of ["fast", "slow"]',
        "outputs-2-description": "How they were found",
    }
    form.update(changes)
    return form


@pytest.fixture(scope="module")
def people(world: World) -> dict[str, str]:
    """API tokens: a developer in two groups, a developer in one, and a plain user."""
    tokens = {}
    with world.api() as api:
        for path in ("/cats", "/dogs"):
            assert api.post("/api/v1/groups", json={"path": path}).status_code == 201
        for name, role, groups in [
            ("two-groups", "developer", ["/cats", "/dogs"]),
            ("one-group", "developer", ["/cats"]),
            ("plain", "user", ["/cats"]),
        ]:
            user = api.post("/api/v1/users", json={"name": name, "role": role, "groups": groups})
            assert user.status_code == 201, user.text
            token = api.post("/api/v1/tokens", json={"name": "t", "user": user.json()["id"]})
            tokens[name] = token.json()["token"]
    return tokens


@pytest.fixture(scope="module")
def admin(world: World) -> ConsoleSession:
    session = world.console()
    assert session.get("/ui/new").status_code == 200
    return session


def _unpack(data: bytes, target: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(target, filter="data")
    return target


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _run_its_tests(module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=module,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # only what the module's tests need
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_form_asks_for_the_module_and_its_fields(admin: ConsoleSession, people: dict[str, str]) -> None:
    page = admin.get("/ui/new")
    assert page.status_code == 200
    html = page.text
    for control in (
        'id="name"',
        'id="title"',
        'id="description"',
        'id="inputs-0-name"',
        'id="outputs-0-type"',
    ):
        assert control in html
    assert 'for="inputs-0-name"' in html and 'list="wizard-types"' in html
    assert '<option value="FILE or image/png or image/jpeg">' in html
    assert 'hx-post="/ui/new/preview"' in html and 'action="/ui/new/download"' in html
    assert 'id="add-parameters"' in html
    assert "the docstring of inference appears here" in html  # nothing declared yet
    assert "None: only admins manage it" in html and '<option value="/cats">' in html


def test_the_preview_shows_the_docstring_as_it_will_parse(admin: ConsoleSession) -> None:
    answer = admin.post("/ui/new/preview", _form())
    assert answer.status_code == 200
    assert "<html" not in answer.text  # a fragment
    assert "problem" not in answer.text
    assert ":type parameters.language: str, default &#34;eng&#34;" in answer.text
    assert ":param inputs.text: The caption &lt;b&gt;" in answer.text
    assert "C:\\\\photos" in answer.text  # escaped for the Python source it goes into
    assert "tar xzf cat-counter.tar.gz" in answer.text
    assert "git add -A &amp;&amp; git commit" in answer.text
    assert "modelport push" in answer.text


@pytest.mark.parametrize(
    ("changes", "control", "message"),
    [
        ({"name": "Cat_Counter"}, "name", "lowercase letters, digits and hyphens"),
        ({"inputs-0-type": "integer"}, "inputs-0-type", "unknown type `integer`"),
        ({"inputs-0-name": "2fast"}, "inputs-0-name", "not starting with a digit"),
        ({"inputs-0-name": "a:b"}, "inputs-0-name", "not starting with a digit"),
        ({"inputs-3-name": "text"}, "inputs-3-name", "declared twice"),
        ({"parameters-1-default": "2"}, "parameters-1-default", "at most 1"),
        ({"parameters-1-default": "high"}, "parameters-1-default", "Write the default as JSON"),
        ({"outputs-2-type": "str, one of [fast]"}, "outputs-2-type", "expected a JSON literal"),
        ({"description": "line\n:param inputs.evil: x"}, "description", "may not start with"),
    ],
)
def test_the_preview_names_each_problem(
    admin: ConsoleSession, changes: dict[str, str], control: str, message: str
) -> None:
    answer = admin.post("/ui/new/preview", _form(**changes))
    assert answer.status_code == 200
    assert f'href="#{control}"' in answer.text
    assert message in answer.text
    assert "tar xzf" not in answer.text  # nothing to push yet
    assert "inputs.evil" not in answer.text.split('id="wizard-docstring"')[-1]


def test_the_download_is_the_init_tree_with_the_declared_api(
    admin: ConsoleSession, world: World, tmp_path: Path
) -> None:
    answer = admin.post("/ui/new/download", _form())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/gzip"
    assert answer.headers["content-disposition"] == 'attachment; filename="cat-counter.tar.gz"'
    module = _unpack(answer.content, tmp_path / "got") / "cat-counter"
    init = create_module("cat-counter", tmp_path / "init")
    assert _files(module) == _files(init)

    definition = read_module(module)
    assert definition.name == "cat-counter"
    assert definition.spec == parse_docstring(EXPECTED_DOCSTRING)
    assert definition.spec.title == 'Find "cats" in photos.'
    assert pack(module, version="v1", use_git=False).files == tuple(_files(module))
    example = load_module_manifest(module).spec.example
    assert example == {"inputs": {"text": "example"}}
    assert load_module_manifest(module).spec.owner is None

    # the module's own tests pass
    result = _run_its_tests(module)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout

    # and the platform takes it: it builds, warms up with the manifest's example and answers placeholders
    with world.api() as api:
        assert push(api, module, version="v1").status_code == 201
        assert wait_built(api, "cat-counter", "v1")["build_status"] == "ready"
        deployment = wait_deployment(api, "cat-counter", deploy(api, "cat-counter", "v1")["generation"])
        assert deployment["status"] == "ready", deployment
        call = api.post("/api/v1/modules/cat-counter/predict", json={"inputs": {"text": "two cats"}})
    assert call.status_code == 200, call.text
    assert call.json()["outputs"] == {"count": 0, "labels": [], "mode": "fast"}


def test_a_module_taking_files_is_tested_with_files(admin: ConsoleSession, tmp_path: Path) -> None:
    form = {
        "name": "photo-mask",
        "title": "Mask a photo",
        "inputs-0-name": "photo",
        "inputs-0-type": "FILE or image/png or image/jpeg",
        "outputs-0-name": "mask",
        "outputs-0-type": "image/png",
    }
    answer = admin.post("/ui/new/download", form)
    assert answer.status_code == 200, answer.text
    module = _unpack(answer.content, tmp_path) / "photo-mask"
    spec = read_module(module).spec
    assert spec.inputs[0].is_file and spec.outputs[0].is_file
    assert load_module_manifest(module).spec.example is None  # no file to warm up with
    result = _run_its_tests(module)
    assert result.returncode == 0, result.stdout + result.stderr


def test_any_text_becomes_a_docstring_that_reads_back(admin: ConsoleSession, tmp_path: Path) -> None:
    cases = [
        ("Ends with a backslash \\", 'Three quotes """ and four """"\n\n\n\nafter blank lines'),
        ('"Quoted"', "tabs\there, a line\u2028separator, \\n not a line break"),
        ("Ünïcödé ☃", "  indented\r\n  lines  "),
    ]
    for number, (title, description) in enumerate(cases):
        form = _form(
            f"text-{number}", title=title, description=description, **{"outputs-0-description": title}
        )
        answer = admin.post("/ui/new/download", form)
        assert answer.status_code == 200, (title, answer.text)
        module = _unpack(answer.content, tmp_path / str(number)) / f"text-{number}"
        spec = read_module(module).spec
        assert spec.title == title.strip()
        assert spec.outputs[0].description == title.strip()
        lines = [line.strip() for line in description.expandtabs().splitlines()]
        assert spec.description.split("\n\n", 1)[1] == "\n".join(lines).replace("\n\n\n\n", "\n\n").strip()


def test_a_download_with_problems_hands_back_the_form(admin: ConsoleSession) -> None:
    answer = admin.post("/ui/new/download", _form(name="", **{"inputs-0-type": "integer"}))
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert "Nothing was downloaded" in answer.text
    assert 'id="inputs-0-type" name="inputs-0-type" aria-invalid="true"' in answer.text
    assert "Give the module a name." in answer.text
    assert 'value="integer"' in answer.text  # what was typed is kept
    assert 'value="The caption &lt;b&gt;"' in answer.text


def test_rows_are_added_and_removed(admin: ConsoleSession) -> None:
    added = admin.post("/ui/new/fields", {**_form(), "add": "inputs"})
    assert added.status_code == 200
    assert 'id="inputs-5-name" name="inputs-5-name" autofocus' in added.text
    assert 'hx-swap-oob="innerHTML"' in added.text  # the preview follows
    removed = admin.post("/ui/new/fields", {**_form(), "remove": "outputs-1"})
    assert 'id="outputs-1-name"' not in removed.text
    assert "labels" not in removed.text
    assert 'id="add-outputs" name="add" value="outputs"' in removed.text
    assert "autofocus" in removed.text.split('id="add-outputs"')[1].split(">")[0]
    # without JavaScript the buttons post the whole form to /ui/new, which answers the page again
    page = admin.post("/ui/new", {**_form(), "add": "parameters"})
    assert page.status_code == 200
    assert 'id="parameters-2-name"' in page.text and 'value="threshold"' in page.text


def test_a_developer_chooses_the_owner_group(world: World, people: dict[str, str], tmp_path: Path) -> None:
    two = world.console(people["two-groups"])
    page = two.get("/ui/new")
    assert page.status_code == 200
    assert '<option value="/cats">' in page.text and '<option value="/dogs">' in page.text
    assert "only admins manage it" not in page.text
    refused = two.post("/ui/new/download", _form(name="dog-counter"))
    assert refused.status_code == 400 and "Choose the group" in refused.text
    other = two.post("/ui/new/download", _form(name="dog-counter", owner="/birds"))
    assert other.status_code == 400 and "Choose one of the groups offered" in other.text
    answer = two.post("/ui/new/download", _form(name="dog-counter", owner="/dogs"))
    assert answer.status_code == 200
    module = _unpack(answer.content, tmp_path) / "dog-counter"
    assert load_module_manifest(module).spec.owner == "/dogs"

    one = world.console(people["one-group"]).get("/ui/new")
    assert '<option value="/cats" selected>' in one.text


def test_a_plain_user_may_not_use_it(world: World, people: dict[str, str]) -> None:
    plain = world.console(people["plain"])
    page = plain.get("/ui/new")
    assert page.status_code == 403
    assert "developer or admin" in page.text
    for path in ("/ui/new/preview", "/ui/new/download", "/ui/new/fields", "/ui/new"):
        answer = plain.post(path, _form())
        assert answer.status_code == 403, path
        assert "tar xzf" not in answer.text


def test_a_post_without_its_csrf_token_is_refused(admin: ConsoleSession) -> None:
    for path in ("/ui/new/preview", "/ui/new/download", "/ui/new/fields"):
        answer = admin.post(path, _form(), csrf=False)
        assert answer.status_code == 403, path
        assert answer.headers["content-type"].startswith("text/html")


def test_signing_in_is_needed(world: World) -> None:
    anonymous = world.anonymous()
    answer = anonymous.get("/ui/new")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/sign-in?next=%2Fui%2Fnew")


def test_data_comes_back_escaped(admin: ConsoleSession) -> None:
    script = "<script>alert(1)</script>"
    answer = admin.post("/ui/new/preview", _form(title=script, **{"inputs-0-description": script}))
    assert script not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    page = admin.post("/ui/new/download", _form(name="", title=script))
    assert script not in page.text
