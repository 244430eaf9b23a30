"""Server-rendered HTML pages of the dev server: the try-it form built from an `ApiSpec`, and Swagger UI.

The form is derived from the spec alone (one control per input and parameter, one checkbox per output) and
posts multipart parts named `inputs.<name>`, `parameters.<name>` and `output_fields`, the same request a
caller would send. Its macros (`templates/_try_form.html`), script (`static/try.js`) and styles
(`static/try.css`) are the web console's "Try it" tab's too. Every asset is vendored under `static/` (served
at `/static`): the pages load nothing from the internet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined

from modelport.sdk.spec import ApiSpec, FieldSpec, Kind

__all__ = ["STATIC_URL", "FormControls", "form_controls", "render_swagger_ui", "render_try_page"]

STATIC_URL = "/static"
"""Where the gateway mounts `modelport/gateway/static/`."""

_SHORT_TEXT = 200  # a str field whose max length is at most this gets a one-line input

Widget = Literal["text", "textarea", "number", "checkbox", "select", "json", "file"]
Encoding = Literal["str", "number", "bool", "json", "choice", "file"]


@dataclass(frozen=True)
class Option:
    """One `<option>`: `value` is the text sent in multipart, `literal` the JSON used in the curl example."""

    value: str
    literal: str
    label: str
    selected: bool = False
    disabled: bool = False


@dataclass(frozen=True)
class Control:
    """What the template needs to draw one input or parameter."""

    name: str
    label: str
    widget: Widget
    encoding: Encoding
    required: bool
    optional: bool
    value: str
    hint: str
    description: str
    attrs: tuple[tuple[str, str], ...] = ()
    options: tuple[Option, ...] = ()
    checked: bool = False


@dataclass(frozen=True)
class OutputChoice:
    """One checkbox of the `output_fields` list."""

    name: str
    hint: str
    description: str


@dataclass(frozen=True)
class FormControls:
    """A try-it form of one `ApiSpec`: a control per input and per parameter, a checkbox per output."""

    inputs: tuple[Control, ...]
    parameters: tuple[Control, ...]
    outputs: tuple[OutputChoice, ...]


def form_controls(spec: ApiSpec) -> FormControls:
    """The controls a try-it form draws for `spec` (this page's, and the web console's)."""
    return FormControls(
        inputs=tuple(_control(f) for f in spec.inputs),
        parameters=tuple(_control(f) for f in spec.parameters),
        outputs=tuple(OutputChoice(f.name, _hint(f), f.description) for f in spec.outputs),
    )


def render_try_page(
    spec: ApiSpec, *, module: str, version: str, predict_url: str, openapi_url: str, docs_url: str
) -> str:
    """Render the try-it page for one module version."""
    template = _environment().get_template("try.html")
    controls = form_controls(spec)
    return template.render(
        title=spec.title or module,
        paragraphs=_paragraphs(spec),
        module=module,
        version=version,
        inputs=controls.inputs,
        parameters=controls.parameters,
        outputs=controls.outputs,
        predict_url=predict_url,
        openapi_url=openapi_url,
        docs_url=docs_url,
        static=STATIC_URL,
    )


def render_swagger_ui(*, openapi_url: str, title: str) -> str:
    """Render a Swagger UI page for the OpenAPI document at `openapi_url`, from the vendored bundle."""
    template = _environment().get_template("swagger.html")
    return template.render(title=title, openapi_url=openapi_url, static=STATIC_URL)


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("modelport.gateway", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # The try-it form's macros (`_try_form.html`) are the console's too, which translates them; here, English.
    environment.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return environment


def _paragraphs(spec: ApiSpec) -> list[str]:
    """The module description without its title line, split into paragraphs."""
    body = spec.description
    if spec.title and body.startswith(spec.title):
        body = body[len(spec.title) :]
    return [p.strip() for p in body.split("\n\n") if p.strip()]


def _hint(f: FieldSpec) -> str:
    return ", ".join([f.type_text, *f.render_modifiers()])


def _control(f: FieldSpec) -> Control:
    common: dict[str, Any] = {
        "name": f"{f.group}.{f.name}",
        "label": f.name,
        "required": f.required,
        "optional": f.optional,
        "hint": _hint(f),
        "description": f.description,
    }
    if f.is_file or any(t.kind is Kind.LIST and t.has_file for t in f.types):
        return Control(**common, widget="file", encoding="file", value="", attrs=_file_attrs(f))
    if f.choices is not None:
        return Control(**common, widget="select", encoding="choice", value="", options=_choice_options(f))
    kinds = {t.kind for t in f.types}
    if kinds & {Kind.JSON, Kind.LIST}:
        placeholder = (("placeholder", _json_placeholder(f)),)
        return Control(**common, widget="json", encoding="json", value=_json_value(f), attrs=placeholder)
    if kinds == {Kind.BOOL}:
        return _bool_control(f, common)
    if kinds <= {Kind.INT, Kind.FLOAT}:
        attrs = _number_attrs(f)
        return Control(**common, widget="number", encoding="number", value=_text_value(f), attrs=attrs)
    return _text_control(f, common)


def _file_attrs(f: FieldSpec) -> tuple[tuple[str, str], ...]:
    mimes = [m for t in f.types for m in (t.item.mime if t.item is not None else t.mime)]
    attrs: list[tuple[str, str]] = []
    if mimes:
        attrs.append(("accept", ",".join(dict.fromkeys(mimes))))
    if not f.is_file:
        attrs.append(("multiple", "multiple"))
    if f.max_bytes is not None:
        attrs.append(("data-max-bytes", str(f.max_bytes)))
    return tuple(attrs)


def _choice_options(f: FieldSpec) -> tuple[Option, ...]:
    assert f.choices is not None
    default = json.dumps(f.default) if f.has_default else None
    options = [
        Option(
            value=c if isinstance(c, str) else json.dumps(c),
            literal=json.dumps(c),
            label=c if isinstance(c, str) else json.dumps(c),
            selected=json.dumps(c) == default,
        )
        for c in f.choices
    ]
    if f.required:
        return (Option("", "", "Choose…", selected=True, disabled=True), *options)
    if not any(o.selected for o in options):
        return (Option("", "", "— not set —", selected=True), *options)
    return tuple(options)


def _bool_control(f: FieldSpec, common: dict[str, Any]) -> Control:
    unset = f.default is None if f.has_default else f.optional
    if unset:
        options = (
            Option("", "", "— not set —", selected=True),
            Option("true", "true", "true"),
            Option("false", "false", "false"),
        )
        return Control(**common, widget="select", encoding="bool", value="", options=options)
    common = {**common, "required": False}  # an unchecked box is a valid `false`
    return Control(**common, widget="checkbox", encoding="bool", value="true", checked=f.default is True)


def _json_placeholder(f: FieldSpec) -> str:
    item = next((t.item for t in f.types if t.item is not None), None)
    if item is None:
        return 'JSON, e.g. {"key": [1, 2]}'
    if item.kind in (Kind.INT, Kind.FLOAT):
        return "JSON list, e.g. [1, 2]"
    if item.kind is Kind.STR:
        return 'JSON list, e.g. ["a", "b"]'
    return "JSON list"


def _number_attrs(f: FieldSpec) -> tuple[tuple[str, str], ...]:
    integer = {t.kind for t in f.types} == {Kind.INT}
    attrs = [("step", "1" if integer else "any")]
    if f.minimum is not None:
        attrs.append(("min", _number_text(f.minimum)))
    if f.maximum is not None:
        attrs.append(("max", _number_text(f.maximum)))
    return tuple(attrs)


def _text_control(f: FieldSpec, common: dict[str, Any]) -> Control:
    attrs: list[tuple[str, str]] = []
    if f.minimum is not None:
        attrs.append(("minlength", _number_text(f.minimum)))
    if f.maximum is not None:
        attrs.append(("maxlength", _number_text(f.maximum)))
    short = f.maximum is not None and f.maximum <= _SHORT_TEXT
    widget: Widget = "text" if short else "textarea"
    return Control(**common, widget=widget, encoding="str", value=_text_value(f), attrs=tuple(attrs))


def _text_value(f: FieldSpec) -> str:
    if not f.has_default or f.default is None:
        return ""
    return f.default if isinstance(f.default, str) else json.dumps(f.default)


def _json_value(f: FieldSpec) -> str:
    if not f.has_default or f.default is None:
        return ""
    return json.dumps(f.default, ensure_ascii=False)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
