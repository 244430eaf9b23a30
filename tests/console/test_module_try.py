"""A module's "Try it" and "API" tabs: a labelled control per declared field, the API's tables and curl
example, the 404 for callers the module is hidden from, and the predict route called with the console's
session cookie (accepted with its CSRF header, refused without it)."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from console_world import FIXTURES, ConsoleSession, World
from drive import deploy, wait_deployment
from PIL import Image

from modelport.gateway.auth import SESSION_COOKIE

HOSTILE = "<script>alert(1)</script>"


@dataclass
class Tags(HTMLParser):
    """The start tags of a page, with their attributes, and the text of every `<label for=…>`."""

    found: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    _label: str | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        self.found.append((tag, values))
        if tag == "label" and "for" in values:
            self._label = values["for"]
            self.labels[self._label] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label = None

    def handle_data(self, data: str) -> None:
        if self._label is not None:
            self.labels[self._label] += data

    def controls(self) -> dict[str, tuple[str, dict[str, str]]]:
        """The form's controls by name (not the output checkboxes)."""
        return {
            values["name"]: (tag, values)
            for tag, values in self.found
            if tag in ("input", "select", "textarea") and "data-encoding" in values
        }

    def outputs(self) -> list[str]:
        return [values["value"] for tag, values in self.found if values.get("name") == "output_fields"]


def tags(html: str) -> Tags:
    parser = Tags()
    parser.feed(html)
    return parser


@dataclass
class Setup:
    world: World
    admin: ConsoleSession
    member: ConsoleSession
    outsider: ConsoleSession


@pytest.fixture(scope="module")
def setup(world: World) -> Setup:
    hostile = world.root / "v1" / "hostile"
    shutil.copytree(FIXTURES / "echo", hostile, ignore=shutil.ignore_patterns("__pycache__"))
    source = hostile / "inference.py"
    source.write_text(
        source.read_text().replace("Echo text back.", f"Echo text back.\n\n    Says {HOSTILE}.")
    )
    for fixture in ("echo", "files", "hostile"):
        world.module(fixture)
    with world.api() as api:
        for path in ("/callers", "/others"):
            assert api.post("/api/v1/groups", json={"path": path}).status_code == 201
        tokens = {}
        for name, group in (("member", "/callers"), ("outsider", "/others")):
            user = api.post("/api/v1/users", json={"name": name, "role": "user", "groups": [group]})
            assert user.status_code == 201, user.text
            made = api.post("/api/v1/tokens", json={"name": "console", "user": user.json()["id"]})
            tokens[name] = made.json()["token"]
        grant = {
            "apiVersion": "modelport/v1",
            "kind": "Api",
            "metadata": {"name": "echo-callers"},
            "spec": {"module": "echo", "access": {"groups": ["/callers"]}},
        }
        assert api.post("/api/v1/apply", json={"documents": [grant]}).status_code == 200
    return Setup(world, world.console(), world.console(tokens["member"]), world.console(tokens["outsider"]))


def test_the_try_page_has_a_labelled_control_per_input_and_parameter(setup: Setup) -> None:
    page = setup.admin.get("/ui/modules/echo/try")
    assert page.status_code == 200, page.text
    found = tags(page.text)
    controls = found.controls()
    assert sorted(controls) == ["inputs.text", "parameters.suffix"]
    for name, (_, values) in controls.items():
        assert found.labels[values["id"]].strip() == name.split(".")[1]
    assert "required" in controls["inputs.text"][1]
    assert "required" not in controls["parameters.suffix"][1]
    assert found.outputs() == ["text", "length"]
    form = next(values for tag, values in found.found if tag == "form" and values.get("id") == "try-form")
    assert form["data-predict-url"] == "/api/v1/modules/echo/predict"
    assert form["data-link-requests"] == "true"
    assert ("script", {"src": "/static/try.js", "defer": ""}) in found.found
    assert 'aria-current="page">Try it</a>' in page.text


def test_file_inputs_get_file_controls_with_a_preview(setup: Setup) -> None:
    page = setup.admin.get("/ui/modules/files/try")
    assert page.status_code == 200, page.text
    found = tags(page.text)
    controls = found.controls()
    assert sorted(controls) == ["inputs.document", "inputs.image"]
    image = controls["inputs.image"][1]
    assert image["type"] == "file" and image["accept"] == "image/png,image/jpeg" and "required" in image
    assert image["data-max-bytes"] == str(1024 * 1024)
    assert controls["inputs.document"][1]["type"] == "file"
    assert page.text.count('class="try-preview"') == 2
    assert found.outputs() == ["mirrored", "width", "info"]
    assert setup.world.served.client().get("/static/try.js").status_code == 200


def test_a_caller_sees_both_tabs_and_anyone_else_gets_404(setup: Setup) -> None:
    for tab in ("try", "docs"):
        shown = setup.member.get(f"/ui/modules/echo/{tab}")
        assert shown.status_code == 200, shown.text
        assert "/ui/modules/echo/metrics" not in shown.text  # a caller's tabs: overview, try, docs
        assert setup.outsider.get(f"/ui/modules/echo/{tab}").status_code == 404
        assert setup.member.get(f"/ui/modules/files/{tab}").status_code == 404
        assert setup.admin.get(f"/ui/modules/nothing/{tab}").status_code == 404
    form = next(
        v for t, v in tags(setup.member.get("/ui/modules/echo/try").text).found if v.get("id") == "try-form"
    )
    assert form["data-link-requests"] == "false"  # the request pages are the owners'
    pinned = setup.member.get("/ui/modules/echo/try?version=v9")  # only a manager picks a version
    assert pinned.status_code == 200 and 'data-predict-url="/api/v1/modules/echo/predict"' in pinned.text
    assert 'id="try-version"' not in pinned.text
    signed_out = setup.world.anonymous().get("/ui/modules/echo/try", follow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/ui/sign-in?next=")


def test_predict_takes_the_session_cookie_with_its_csrf_header_and_refuses_it_without(setup: Setup) -> None:
    client = setup.member.client
    assert client.cookies.get(SESSION_COOKIE)
    url = "/api/v1/modules/echo/predict"
    parts = [
        ("inputs.text", (None, "hi")),
        ("parameters.suffix", (None, "!")),
        ("output_fields", (None, "text")),
    ]
    answer = client.post(url, files=parts, headers={"X-CSRF-Token": setup.member.csrf})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == {"text": "hi!"}
    assert answer.headers["x-request-id"]
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        refused = client.post(url, files=parts, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] in ("unauthorized", "invalid_token")
    outsider = setup.outsider.client.post(url, files=parts, headers={"X-CSRF-Token": setup.outsider.csrf})
    assert outsider.status_code == 404


def test_a_file_output_is_fetched_with_the_session_cookie(setup: Setup) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (3, 2), "red").save(picture, format="PNG")
    client = setup.admin.client
    answer = client.post(
        "/api/v1/modules/files/predict",
        files=[("inputs.image", ("red.png", picture.getvalue(), "image/png"))],
        headers={"X-CSRF-Token": setup.admin.csrf},
    )
    assert answer.status_code == 200, answer.text
    mirrored = answer.json()["outputs"]["mirrored"]
    assert mirrored["content_type"] == "image/png" and mirrored["url"].startswith(
        "/api/v1/modules/files/outputs/"
    )
    fetched = client.get(mirrored["url"])
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert setup.world.served.client().get(mirrored["url"]).status_code == 401


def rows(html: str, table: str) -> dict[str, str]:
    """The rows of one of the API tab's tables, by field name: the row's HTML."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return {row.split('"', 1)[0]: row for row in body.split('<tr data-field="')[1:]}


def test_the_api_tab_lists_every_field_with_its_type_default_and_description(setup: Setup) -> None:
    page = setup.member.get("/ui/modules/echo/docs")
    assert page.status_code == 200, page.text
    inputs, parameters = rows(page.text, "api-inputs"), rows(page.text, "api-parameters")
    outputs = rows(page.text, "api-outputs")
    assert list(inputs) == ["text"] and list(parameters) == ["suffix"] and list(outputs) == ["text", "length"]
    assert (
        "<code>str</code>" in inputs["text"]
        and "required" in inputs["text"]
        and "Text to echo" in inputs["text"]
    )
    suffix = parameters["suffix"]
    assert "optional" in suffix and "<code>&#34;&#34;</code>" in suffix and "Appended to the text" in suffix
    assert "<code>int</code>" in outputs["length"] and "Length of the text" in outputs["length"]
    assert "POST /api/v1/modules/echo/predict" in page.text
    assert 'href="/docs?module=echo"' in page.text
    assert 'href="/api/v1/modules/echo/openapi.json"' in page.text
    assert "curl -X POST &#39;http://testserver/api/v1/modules/echo/predict&#39;" in page.text
    assert "Bearer $MODELPORT_TOKEN" in page.text
    assert "-d &#39;{&#34;inputs&#34;: {&#34;text&#34;: &#34;text&#34;}}&#39;" in page.text
    assert "multipart form parts named inputs.&lt;name&gt; and parameters.&lt;name&gt;" in page.text


def test_the_api_tab_of_a_file_module_shows_a_multipart_example(setup: Setup) -> None:
    page = setup.admin.get("/ui/modules/files/docs")
    assert page.status_code == 200, page.text
    inputs = rows(page.text, "api-inputs")
    assert list(inputs) == ["image", "document"]
    assert "image/png or image/jpeg" in inputs["image"] and "max size 1 MB" in inputs["image"]
    assert list(rows(page.text, "api-outputs")) == ["mirrored", "width", "info"]
    assert "-F &#39;inputs.image=@image.png&#39;" in page.text
    assert "document" not in page.text.split('id="api-curl"', 1)[1].split("</pre>", 1)[0]


def test_what_a_module_declares_is_shown_escaped(setup: Setup) -> None:
    for tab in ("try", "docs"):
        page = setup.admin.get(f"/ui/modules/hostile/{tab}")
        assert page.status_code == 200, page.text
        assert HOSTILE not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_a_manager_may_show_another_running_version(setup: Setup) -> None:
    world = setup.world
    world.module("echo", name="twice")
    world.module("echo", "v2", name="twice", deployed=False)
    with world.api() as api:
        wait_deployment(api, "twice", deploy(api, "twice", "v2", canary_percent=10)["generation"])
    page = setup.admin.get("/ui/modules/twice/try")
    assert (
        '<option value="v1" selected>v1</option>' in page.text
        and '<option value="v2">v2</option>' in page.text
    )
    assert 'data-predict-url="/api/v1/modules/twice/predict"' in page.text
    pinned = setup.admin.get("/ui/modules/twice/try?version=v2")
    assert '<option value="v2" selected>v2</option>' in pinned.text
    assert 'data-predict-url="/api/v1/modules/twice/predict?version=v2"' in pinned.text
    docs = setup.admin.get("/ui/modules/twice/docs?version=v2")
    assert 'href="/api/v1/modules/twice/openapi.json?version=v2"' in docs.text
    assert setup.admin.get("/ui/modules/twice/try?version=v9").status_code == 404
