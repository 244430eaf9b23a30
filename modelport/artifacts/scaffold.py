"""A new module's files: the skeleton `modelport init` writes, and the same tree for a declared API.

The templates live in `templates/module/` (the tree: a small word counter) and `templates/api/` (the files
that change when the module's API is given, as the console's new-module wizard does: an `inference` whose
docstring declares that API and whose body returns placeholders of the declared output types, and tests of
that API). Every template file ends in `.tmpl`, so that the templates are never imported, collected by pytest
or type-checked as part of the package; the suffix is dropped when the file is written. `gitignore` becomes
`.gitignore`, and `test_module.py` is named after the module (`test_receipt_ocr.py`) so that the tests of
several modules in one repository do not collide. Templates are Jinja2 with `{{ name }}` and
`{{ identifier }}` (the name with `_` for `-`) placeholders.

A leaf like the rest of `artifacts`: the command line and the console both use it.
"""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
import shutil
from collections.abc import Iterable
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import yaml

from modelport.core.manifests import check_group_path
from modelport.sdk import ApiSpec, FieldSpec, Kind, SpecError, TypeSpec, parse_docstring
from modelport.sdk.spec import GROUPS, Group, check_value

__all__ = [
    "ENTRYPOINT",
    "NAME_PATTERN",
    "check_api",
    "check_name",
    "create_module",
    "docstring_source",
    "render_module",
]

# The same rule as `metadata.name` in a manifest (modelport.core.manifests.Metadata).
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

ENTRYPOINT = PurePosixPath("inference.py")
"""The file of the `inference` function, as `modelport.yaml` names it."""

_TEMPLATES: Traversable = files("modelport.artifacts") / "templates"
_SUFFIX = ".tmpl"
_RENAMES = {"gitignore": ".gitignore", "test_module.py": "test_{identifier}.py"}
_INDENT = "    "


def create_module(name: str, parent: Path, *, api: ApiSpec | None = None, owner: str | None = None) -> Path:
    """Create the module `name` in `parent/name/` and return its path (`api`, `owner`: see `render_module`).

    Raises ValueError for a name that is not a valid module name and FileExistsError when `parent/name`
    exists and is not an empty directory. Nothing is left behind when writing fails.
    """
    check_name(name)
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty; choose another name or directory")
    rendered = render_module(name, api=api, owner=owner)
    created = not target.exists()
    try:
        for relative, text in rendered.items():
            path = target.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def check_name(name: str) -> None:
    """Raise ValueError, saying what is wrong, when `name` is not a valid module name."""
    if NAME_PATTERN.fullmatch(name):
        return
    if len(name) > 63:
        problem = f"is {len(name)} characters long"
    elif not name:
        problem = "is empty"
    else:
        problem = "is not allowed"
    raise ValueError(
        f"module name {name!r} {problem}: use 1 to 63 lowercase letters, digits and hyphens, "
        "starting and ending with a letter or digit (for example `digits` or `receipt-ocr`)"
    )


def check_api(api: ApiSpec) -> None:
    """Raise ValueError when `api`, written into `inference.py`, would not parse back into the same API."""
    try:
        parsed = parse_docstring(_docstring_of(_entrypoint_stub(docstring_source(api, indent=_INDENT))))
    except SyntaxError as exc:
        raise ValueError(f"the docstring would not be Python: {exc.msg}") from None
    except SpecError as exc:
        raise ValueError(f"the docstring would not parse: {exc.message}") from None
    if parsed != api:
        raise ValueError("the docstring would not parse back into the same API")


def docstring_source(api: ApiSpec, *, indent: str = "") -> str:
    """`api` as a docstring literal: triple-quoted, escaped, each line but the first indented by `indent`."""
    text = api.to_docstring().rstrip("\n")
    escaped = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    first, *rest = escaped.split("\n")
    lines = [first, *(f"{indent}{line}" if line else "" for line in rest)]
    return '"""' + "\n".join(lines) + f"\n{indent}" + '"""'


def render_module(
    name: str, *, api: ApiSpec | None = None, owner: str | None = None
) -> dict[PurePosixPath, str]:
    """Every file of the module `name`, rendered in memory (a template error writes nothing).

    Without `api` it is the word counter `modelport init` writes. With it, `inference` declares `api` and
    answers placeholders of its output types, the tests check that API, and the manifest's warm-up example
    is a request `api` accepts (none where it takes files). `owner` (a group path) goes into the manifest as
    `spec.owner`. Raises ValueError for a bad name or group path, or an `api` that `check_api` refuses.
    """
    check_name(name)
    context: dict[str, Any] = {"name": name, "identifier": name.replace("-", "_"), "owner": None, "api": None}
    if owner is not None:
        context["owner"] = json.dumps(check_group_path(owner))
    templates = _templates(_TEMPLATES / "module", PurePosixPath())
    if api is not None:
        check_api(api)
        context.update(_api_context(api))
        templates.update(_templates(_TEMPLATES / "api", PurePosixPath()))
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders Python, YAML and Markdown files, not HTML
    )
    out: dict[PurePosixPath, str] = {}
    for relative, source in templates.items():
        out[_output_path(relative, context)] = environment.from_string(source).render(context)
    if api is not None and parse_docstring(_docstring_of(out[ENTRYPOINT])) != api:
        raise ValueError("the docstring of the rendered inference.py does not parse back into the API")
    return out


def _templates(directory: Traversable, prefix: PurePosixPath) -> dict[PurePosixPath, str]:
    found: dict[PurePosixPath, str] = {}
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name != "__pycache__":
                found.update(_templates(entry, prefix / entry.name))
        elif entry.name.endswith(_SUFFIX):
            found[prefix / entry.name] = entry.read_text(encoding="utf-8")
    return found


def _output_path(relative: PurePosixPath, context: dict[str, Any]) -> PurePosixPath:
    stem = relative.name.removesuffix(_SUFFIX)
    return relative.with_name(_RENAMES.get(stem, stem).format(**context))


def _entrypoint_stub(docstring: str) -> str:
    return f"def inference():\n{_INDENT}{docstring}\n"


def _docstring_of(source: str) -> str:
    """The docstring of `inference` in `source`, read as the platform reads it (without running the code)."""
    tree = ast.parse(source)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "inference")
    return ast.get_docstring(function, clean=False) or ""


# What the API templates are given


_NO_VALUE: Any = object()


def _api_context(api: ApiSpec) -> dict[str, Any]:
    inputs = _valid_values(api.inputs)
    parameters = _valid_values(api.parameters)
    example = _example(api, inputs, parameters)
    return {
        "api": api,
        "docstring": docstring_source(api, indent=_INDENT),
        "outputs": [(repr(f.name), _python(_placeholder(f))) for f in api.outputs],
        "example": _indented_yaml({"example": example}, "  ") if example is not None else None,
        "request_json": shlex.quote(json.dumps(example, ensure_ascii=False)) if example is not None else None,
        "form_arguments": _form_arguments(api, inputs),
        "file_inputs": any(f.has_file for f in api.inputs),
        "record": _record_source(api, inputs),
        "parameters": _python({name: value for name, value in parameters.items() if value is not _NO_VALUE}),
        "names": {group: repr([f.name for f in api.group(group)]) for group in GROUPS},
        "outputs_set": _set_display(f.name for f in api.outputs),
        "required_outputs": _set_display(f.name for f in api.outputs if not f.optional),
    }


def _valid_values(fields: tuple[FieldSpec, ...]) -> dict[str, Any]:
    """A value for each field the platform would pass to `inference`: its default, or, where it is required,
    one it accepts (`_NO_VALUE` where none can be made, as for a file). Optional fields are left out."""
    values: dict[str, Any] = {}
    for field in fields:
        if field.has_default:
            values[field.name] = field.default
        elif field.required:
            values[field.name] = _sample(field)
    return values


def _example(api: ApiSpec, inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's warm-up request: the required inputs and parameters; None where one has no value."""
    request: dict[str, Any] = {}
    groups: tuple[tuple[Group, dict[str, Any]], ...] = (("inputs", inputs), ("parameters", parameters))
    for group, values in groups:
        required = {f.name: values[f.name] for f in api.group(group) if f.required}
        if any(value is _NO_VALUE for value in required.values()):
            return None
        if required or group == "inputs":
            request[group] = required
    return request


def _sample(field: FieldSpec) -> Any:
    if field.choices:
        return field.choices[0]
    for type_ in field.types:
        value = _sample_of(type_, field.minimum, field.maximum)
        if value is not _NO_VALUE and check_value(field, value) is None:
            return value
    return _NO_VALUE


def _sample_of(type_: TypeSpec, low: float | None, high: float | None) -> Any:
    kind = type_.kind
    if kind is Kind.STR:
        text = "example".ljust(math.ceil(low or 0), "x")
        return text[: math.floor(high)] if high is not None else text
    if kind in (Kind.INT, Kind.FLOAT):
        value: float = 1 if kind is Kind.INT else 0.5
        if low is not None:
            value = max(value, math.ceil(low) if kind is Kind.INT else low)
        if high is not None:
            value = min(value, math.floor(high) if kind is Kind.INT else high)
        return value
    if kind is Kind.BOOL:
        return True
    if kind is Kind.JSON:
        return {}
    if kind is Kind.LIST:
        assert type_.item is not None
        item = _sample_of(type_.item, None, None)
        count = max(1, math.ceil(low or 0)) if item is not _NO_VALUE else 0
        return [item] * (min(count, math.floor(high)) if high is not None else count)
    return _NO_VALUE


def _placeholder(field: FieldSpec) -> Any:
    """What the stub answers for an output: a value of its first type (bytes for a file)."""
    if field.choices:
        return field.choices[0]
    return {
        Kind.STR: "",
        Kind.INT: 0,
        Kind.FLOAT: 0.0,
        Kind.BOOL: False,
        Kind.JSON: {},
        Kind.LIST: [],
        Kind.FILE: b"",
    }[field.types[0].kind]


def _python(value: Any) -> str:
    """A JSON value (or bytes) as Python source."""
    return repr(value)


def _set_display(names: Iterable[str]) -> str:
    shown = [repr(name) for name in names]
    return "{" + ", ".join(shown) + "}" if shown else "set()"


def _record_source(api: ApiSpec, inputs: dict[str, Any]) -> str:
    """The tests' record as a Python dict display: files made in the test's temporary `directory`."""
    lines = []
    for field in api.inputs:
        if field.name not in inputs:
            continue
        value = inputs[field.name]
        if value is not _NO_VALUE:
            source = _python(value)
        elif field.is_file:
            source = f"_file(directory, {field.name!r}, {_content_type(field)!r})"
        else:
            source = "None  # no value fits the declared type: put a valid one here"
        lines.append(f"{_INDENT * 2}{field.name!r}: {source},")
    return "{\n" + "\n".join(lines) + f"\n{_INDENT}}}" if lines else "{}"


def _content_type(field: FieldSpec) -> str:
    file_type = field.file_type
    concrete = [m for m in file_type.mime if "*" not in m] if file_type is not None else []
    return concrete[0] if concrete else "application/octet-stream"


def _form_arguments(api: ApiSpec, inputs: dict[str, Any]) -> str:
    """`curl -F` arguments of a form request with the required inputs (a file from `<name>` in the folder)."""
    arguments = []
    for field in api.inputs:
        value = inputs.get(field.name, _NO_VALUE)
        if not field.required:
            continue
        if value is _NO_VALUE:
            arguments.append(f"-F inputs.{field.name}=@{field.name}")
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            arguments.append(f"-F {shlex.quote(f'inputs.{field.name}={text}')}")
    return " \\\n  ".join(arguments)


def _indented_yaml(value: Any, indent: str) -> str:
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True, width=10_000)
    return "\n".join(f"{indent}{line}" for line in text.rstrip("\n").split("\n"))
