"""The try-it page and Swagger UI page: form controls derived from the spec, escaping, vendored assets."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

import modelport.gateway
from modelport.gateway.app import STATIC_DIR
from modelport.gateway.pages import render_swagger_ui, render_try_page
from modelport.sdk import ApiSpec, parse_docstring

STATIC = Path(modelport.gateway.__file__).parent / "static"

DOC = """Read a receipt.

Longer description with <script>alert("module")</script> inside.

:param inputs.image: Photo <script>alert("field")</script>
:type inputs.image: FILE or image/jpeg or image/png, max size 10 MB

:param inputs.attachment: Any file
:type inputs.attachment: FILE, optional

:param inputs.pages: Scanned pages
:type inputs.pages: list[image/png], optional

:param inputs.title: A short title
:type inputs.title: str, max 80

:param inputs.prompt: Free text
:type inputs.prompt: str

:param inputs.essay: Long text
:type inputs.essay: str, optional, max 5000

:param parameters.language: OCR language
:type parameters.language: str, optional, default "eng"

:param parameters.top_k: Candidates
:type parameters.top_k: int, default 3, min 1, max 10

:param parameters.threshold: Confidence
:type parameters.threshold: float, optional, min 0, max 1.5

:param parameters.deskew: Straighten first
:type parameters.deskew: bool, default true

:param parameters.strict: Strict mode
:type parameters.strict: bool

:param parameters.debug: Debug output
:type parameters.debug: bool, optional

:param parameters.mode: Speed
:type parameters.mode: str, one of ["fast", "accurate"], default "accurate"

:param parameters.level: Level
:type parameters.level: int, one of [1, 2, 3]

:param parameters.options: Engine options
:type parameters.options: json, optional, default {"dpi": 300}

:param parameters.labels: Labels
:type parameters.labels: list[str], optional

:param outputs.response: Text
:type outputs.response: str

:param outputs.annotated: Drawn boxes
:type outputs.annotated: image/png
"""


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""
    options: list[Element] = field(default_factory=list)


class Page(HTMLParser):
    """Collects every element with its attributes; textarea, option, script and h1 elements get their text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self._select: Element | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag == "select":
            self._select = element
        elif tag == "option" and self._select is not None:
            self._select.options.append(element)
        if tag in ("textarea", "option", "script", "h1", "title", "p", "code"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        if self._open and self._open[-1].tag == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1].text += data

    def named(self, name: str) -> Element:
        found = [e for e in self.elements if e.attrs.get("name") == name]
        assert len(found) == 1, f"{name}: {found}"
        return found[0]

    def all(self, tag: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag]


def render(spec: ApiSpec | None = None, **overrides: str) -> str:
    arguments = {
        "module": "receipt-ocr",
        "version": "v1.2.0",
        "predict_url": "/api/v1/modules/receipt-ocr/predict",
        "openapi_url": "/api/v1/modules/receipt-ocr/openapi.json",
        "docs_url": "/docs",
        **overrides,
    }
    return render_try_page(spec or parse_docstring(DOC), **arguments)


@pytest.fixture(scope="module")
def page() -> Page:
    return Page(render())


def test_file_inputs_accept_the_declared_types(page: Page) -> None:
    image = page.named("inputs.image")
    assert (image.tag, image.attrs["type"]) == ("input", "file")
    assert image.attrs["accept"] == "image/jpeg,image/png"
    assert image.attrs["data-max-bytes"] == str(10 * 1024 * 1024)
    assert "required" in image.attrs
    attachment = page.named("inputs.attachment")
    assert attachment.attrs["type"] == "file"
    assert "accept" not in attachment.attrs
    assert "required" not in attachment.attrs
    pages = page.named("inputs.pages")
    assert pages.attrs["accept"] == "image/png"
    assert "multiple" in pages.attrs


def test_strings_get_a_line_or_a_textarea_by_length(page: Page) -> None:
    title = page.named("inputs.title")
    assert (title.tag, title.attrs["type"], title.attrs["maxlength"]) == ("input", "text", "80")
    assert page.named("inputs.prompt").tag == "textarea"
    essay = page.named("inputs.essay")
    assert (essay.tag, essay.attrs["maxlength"]) == ("textarea", "5000")
    language = page.named("parameters.language")
    assert (language.tag, language.text) == ("textarea", "eng")


def test_numbers_carry_step_and_bounds(page: Page) -> None:
    top_k = page.named("parameters.top_k")
    assert top_k.attrs["type"] == "number"
    assert [top_k.attrs[a] for a in ("step", "min", "max", "value")] == ["1", "1", "10", "3"]
    threshold = page.named("parameters.threshold")
    assert [threshold.attrs[a] for a in ("step", "min", "max")] == ["any", "0", "1.5"]
    assert threshold.attrs["value"] == ""


def test_booleans_are_checkboxes_unless_they_may_be_unset(page: Page) -> None:
    deskew = page.named("parameters.deskew")
    assert (deskew.attrs["type"], deskew.attrs["value"]) == ("checkbox", "true")
    assert "checked" in deskew.attrs
    strict = page.named("parameters.strict")
    assert strict.attrs["type"] == "checkbox"
    assert "checked" not in strict.attrs
    assert "required" not in strict.attrs  # an unchecked box is a valid `false`
    debug = page.named("parameters.debug")
    assert debug.tag == "select"
    assert [o.attrs["value"] for o in debug.options] == ["", "true", "false"]


def test_one_of_becomes_a_select_with_the_default_chosen(page: Page) -> None:
    mode = page.named("parameters.mode")
    assert mode.tag == "select"
    assert [o.attrs["value"] for o in mode.options] == ["fast", "accurate"]
    assert [o.attrs["value"] for o in mode.options if "selected" in o.attrs] == ["accurate"]
    assert "required" not in mode.attrs
    level = page.named("parameters.level")
    assert "required" in level.attrs
    assert [o.attrs["value"] for o in level.options] == ["", "1", "2", "3"]
    assert "disabled" in level.options[0].attrs
    assert [o.attrs["data-literal"] for o in level.options[1:]] == ["1", "2", "3"]


def test_json_and_lists_are_textareas_prefilled_with_json(page: Page) -> None:
    options = page.named("parameters.options")
    assert options.tag == "textarea"
    assert json.loads(options.text) == {"dpi": 300}
    labels = page.named("parameters.labels")
    assert (labels.tag, labels.text) == ("textarea", "")
    assert "JSON list" in str(labels.attrs["placeholder"])


def test_required_flags_follow_the_spec(page: Page) -> None:
    required = {str(e.attrs["name"]) for e in page.elements if "required" in e.attrs and e.attrs.get("name")}
    assert required == {"inputs.image", "inputs.title", "inputs.prompt", "parameters.level"}


def test_every_output_has_a_checked_box(page: Page) -> None:
    boxes = [e for e in page.elements if e.attrs.get("name") == "output_fields"]
    assert [b.attrs["value"] for b in boxes] == ["response", "annotated"]
    assert all(b.attrs["type"] == "checkbox" and "checked" in b.attrs for b in boxes)


def test_controls_are_named_after_their_group(page: Page) -> None:
    names = [str(e.attrs["name"]) for e in page.elements if "data-encoding" in e.attrs]
    spec = parse_docstring(DOC)
    assert names == [f"{f.group}.{f.name}" for f in (*spec.inputs, *spec.parameters)]


def test_links_and_submission_target(page: Page) -> None:
    hrefs = {e.attrs.get("href") for e in page.all("a")}
    assert {"/docs", "/api/v1/modules/receipt-ocr/openapi.json"} <= hrefs
    (form,) = page.all("form")
    assert form.attrs["action"] == form.attrs["data-predict-url"] == "/api/v1/modules/receipt-ocr/predict"
    assert [link.attrs["href"] for link in page.all("link")] == ["/static/modelport.css", "/static/try.css"]
    # The script is the console's too: a static file, no inline code (the console forbids inline code).
    assert [s.attrs.get("src") for s in page.all("script") if s.attrs.get("src")] == ["/static/try.js"]


def test_title_and_description() -> None:
    page = Page(render())
    (h1,) = page.all("h1")
    assert h1.text == "Read a receipt."
    assert 'Longer description with <script>alert("module")</script> inside.' in [
        p.text for p in page.all("p")
    ]
    untitled = Page(render(parse_docstring(":param inputs.x: X")))
    assert untitled.all("h1")[0].text == "receipt-ocr"


def test_untrusted_text_is_escaped() -> None:
    html = render(predict_url="/p?q=</script><script>alert(1)</script>", module="<b>m</b>")
    page = Page(html)
    assert "<script>alert" not in html
    assert "<b>m</b>" not in html
    assert len(page.all("script")) == 2  # the page script and the JSON of its texts
    assert any(p.text == 'Photo <script>alert("field")</script>' for p in page.all("p"))
    (form,) = page.all("form")
    assert form.attrs["data-predict-url"] == "/p?q=</script><script>alert(1)</script>"


def test_a_module_without_inputs_or_outputs_still_renders() -> None:
    page = Page(render(ApiSpec()))
    assert not [e for e in page.elements if "data-encoding" in e.attrs]
    assert not [e for e in page.elements if e.attrs.get("name") == "output_fields"]


def test_page_script_is_valid_javascript() -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed: run scripts/install-system-deps.sh"
    texts = next(s for s in Page(render()).all("script") if s.attrs.get("id") == "try-texts")
    assert set(json.loads(texts.text)) >= {"network", "failed", "download", "latency", "request", "body"}
    subprocess.run([node, "--check", str(STATIC_DIR / "try.js")], check=True)


def test_swagger_ui_loads_the_vendored_bundle() -> None:
    html = render_swagger_ui(openapi_url="/api/v1/modules/m/openapi.json", title="m <dev>")
    page = Page(html)
    sources = [s.attrs.get("src") for s in page.all("script")]
    assert "/static/swagger-ui/swagger-ui-bundle.js" in sources
    assert "/static/swagger-ui/swagger-ui.css" in [link.attrs["href"] for link in page.all("link")]
    config = next(s for s in page.all("script") if s.attrs.get("id") == "mp-swagger-config")
    assert json.loads(config.text) == {"url": "/api/v1/modules/m/openapi.json"}
    assert "tryItOutEnabled: true" in html
    assert page.all("title")[0].text.startswith("m <dev>")
    assert "m <dev>" not in html
    assert "https://" not in html


@pytest.mark.parametrize(
    ("path", "minimum"),
    [
        ("swagger-ui/swagger-ui-bundle.js", 500_000),
        ("swagger-ui/swagger-ui.css", 50_000),
        ("swagger-ui/LICENSE", 5_000),
        ("htmx.min.js", 20_000),
        ("htmx.LICENSE", 300),
        ("modelport.css", 2_000),
    ],
)
def test_vendored_assets_are_present(path: str, minimum: int) -> None:
    assert (STATIC / path).stat().st_size > minimum
