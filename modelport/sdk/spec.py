"""The docstring grammar and the frozen `ApiSpec` it produces.

A module's API is declared in the docstring of its `inference` function with Sphinx field lists:

    :param inputs.image: Input image for visual analysis
    :type inputs.image: FILE or image/jpeg or image/png

The docstring is parsed once per version; validation, OpenAPI, the try-it form and the client all read the
resulting `ApiSpec`. Every error names the docstring line (1 = the line holding the opening quotes) and what
was expected.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

__all__ = ["ApiSpec", "FieldSpec", "Group", "Kind", "SpecError", "TypeSpec", "parse_docstring"]

Group = Literal["inputs", "parameters", "outputs"]
GROUPS: tuple[Group, ...] = ("inputs", "parameters", "outputs")

_FIELD_RE = re.compile(r"^:(?P<directive>[A-Za-z_]+)(?:\s+(?P<target>[^:]*?))?\s*:(?P<rest>.*)$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$")
_SIZE_RE = re.compile(r"^max size\s+(?P<n>\S+)\s*(?P<unit>KB|MB|GB)$", re.IGNORECASE)
_UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3}


class SpecError(ValueError):
    """The docstring does not follow the grammar. `line` is 1-based within the docstring."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"docstring line {line}: {message}")
        self.line = line
        self.message = message


class Kind(StrEnum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    JSON = "json"
    LIST = "list"
    FILE = "file"


_SCALARS = {"str": Kind.STR, "int": Kind.INT, "float": Kind.FLOAT, "bool": Kind.BOOL, "json": Kind.JSON}


@dataclass(frozen=True)
class TypeSpec:
    """One alternative of a field's type. Files carry the MIME patterns they accept (empty: any)."""

    kind: Kind
    item: TypeSpec | None = None
    mime: tuple[str, ...] = ()

    def render(self) -> str:
        if self.kind is Kind.LIST:
            assert self.item is not None
            return f"list[{self.item.render()}]"
        if self.kind is Kind.FILE:
            return " or ".join(("FILE", *self.mime))
        return self.kind.value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.item is not None:
            out["item"] = self.item.to_dict()
        if self.mime:
            out["mime"] = list(self.mime)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TypeSpec:
        item = data.get("item")
        return cls(
            kind=Kind(data["kind"]),
            item=cls.from_dict(item) if item is not None else None,
            mime=tuple(data.get("mime", ())),
        )

    def accepts_mime(self, content_type: str) -> bool:
        return not self.mime or any(_mime_matches(p, content_type) for p in self.mime)

    @property
    def has_file(self) -> bool:
        return self.kind is Kind.FILE or (self.item is not None and self.item.has_file)


_MISSING: Any = object()


@dataclass(frozen=True)
class FieldSpec:
    """One declared input, parameter or output."""

    group: Group
    name: str
    types: tuple[TypeSpec, ...]
    description: str = ""
    optional: bool = False
    default: Any = _MISSING
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_bytes: int | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    @property
    def required(self) -> bool:
        return not self.optional and not self.has_default

    @property
    def is_file(self) -> bool:
        return any(t.kind is Kind.FILE for t in self.types)

    @property
    def has_file(self) -> bool:
        return any(t.has_file for t in self.types)

    @property
    def file_type(self) -> TypeSpec | None:
        return next((t for t in self.types if t.kind is Kind.FILE), None)

    @property
    def type_text(self) -> str:
        return " or ".join(t.render() for t in self.types)

    def render_modifiers(self) -> list[str]:
        mods = []
        if self.optional:
            mods.append("optional")
        if self.has_default:
            mods.append(f"default {json.dumps(self.default, ensure_ascii=False)}")
        if self.choices is not None:
            mods.append(f"one of {json.dumps(list(self.choices), ensure_ascii=False)}")
        if self.minimum is not None:
            mods.append(f"min {_num(self.minimum)}")
        if self.maximum is not None:
            mods.append(f"max {_num(self.maximum)}")
        if self.max_bytes is not None:
            mods.append(f"max size {_num(self.max_bytes / _UNITS['MB'])} MB")
        return mods

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "types": [t.to_dict() for t in self.types],
            "description": self.description,
            "optional": self.optional,
        }
        if self.has_default:
            out["default"] = self.default
        for key in ("choices", "minimum", "maximum", "max_bytes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "choices" else value
        return out

    @classmethod
    def from_dict(cls, group: Group, data: dict[str, Any]) -> FieldSpec:
        choices = data.get("choices")
        return cls(
            group=group,
            name=data["name"],
            types=tuple(TypeSpec.from_dict(t) for t in data["types"]),
            description=data.get("description", ""),
            optional=data.get("optional", False),
            default=data.get("default", _MISSING),
            choices=tuple(choices) if choices is not None else None,
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
            max_bytes=data.get("max_bytes"),
        )


@dataclass(frozen=True)
class ApiSpec:
    """The parsed, immutable API of one module version."""

    title: str = ""
    description: str = ""
    inputs: tuple[FieldSpec, ...] = ()
    parameters: tuple[FieldSpec, ...] = ()
    outputs: tuple[FieldSpec, ...] = ()
    _index: dict[tuple[str, str], FieldSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for f in (*self.inputs, *self.parameters, *self.outputs):
            self._index[(f.group, f.name)] = f

    def group(self, group: Group) -> tuple[FieldSpec, ...]:
        return {"inputs": self.inputs, "parameters": self.parameters, "outputs": self.outputs}[group]

    def get(self, group: Group, name: str) -> FieldSpec | None:
        return self._index.get((group, name))

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.outputs)

    @property
    def has_file_inputs(self) -> bool:
        return any(f.has_file for f in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            **{g: [f.to_dict() for f in self.group(g)] for g in GROUPS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiSpec:
        return cls(
            title=data.get("title", ""),
            description=data.get("description", ""),
            **{g: tuple(FieldSpec.from_dict(g, f) for f in data.get(g, ())) for g in GROUPS},
        )

    def to_docstring(self) -> str:
        """Render the spec back into the grammar; `parse_docstring(spec.to_docstring()) == spec`."""
        lines = [self.description, ""] if self.description else []
        for f in (*self.inputs, *self.parameters, *self.outputs):
            lines.append(f":param {f.group}.{f.name}: {f.description}".rstrip())
            lines.append(f":type {f.group}.{f.name}: {', '.join([f.type_text, *f.render_modifiers()])}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _mime_matches(pattern: str, content_type: str) -> bool:
    content_type = content_type.split(";", 1)[0].strip().lower()
    if pattern.endswith("/*"):
        return content_type.startswith(pattern[:-1])
    return content_type == pattern


# Parsing


@dataclass
class _Field:
    group: Group
    name: str
    line: int
    description: list[str] = field(default_factory=list)
    type_text: str | None = None
    type_line: int = 0


def parse_docstring(doc: str | None) -> ApiSpec:
    """Parse a docstring into an `ApiSpec`, or raise `SpecError` naming the line at fault."""
    fields: dict[tuple[str, str], _Field] = {}
    free: list[str] = []
    current: _Field | None = None
    pending_types: list[tuple[str, str, str, int]] = []
    for number, raw in enumerate((doc or "").expandtabs().splitlines(), start=1):
        line = raw.strip()
        if not line.startswith(":"):
            if current is None:
                free.append(line)
            elif line:
                current.description.append(line)
            continue
        directive, group, name, rest = _split_field(line, number)
        if directive == "param":
            key = (group, name)
            if key in fields:
                raise SpecError(number, f"{group}.{name} is declared twice (first on line {fields[key].line})")
            current = fields[key] = _Field(group, name, number, [rest] if rest else [])
        else:
            pending_types.append((group, name, rest, number))
            current = None
    for group, name, text, number in pending_types:
        target = fields.get((group, name))
        if target is None:
            raise SpecError(number, f"`:type {group}.{name}:` has no matching `:param {group}.{name}:`")
        if target.type_text is not None:
            raise SpecError(number, f"{group}.{name} has two `:type` lines (first on line {target.type_line})")
        target.type_text, target.type_line = text, number
    title, description = _free_text(free)
    built = [_build_field(f) for f in fields.values()]
    return ApiSpec(
        title=title,
        description=description,
        **{g: tuple(f for f in built if f.group == g) for g in GROUPS},
    )


def _split_field(line: str, number: int) -> tuple[str, Group, str, str]:
    match = _FIELD_RE.match(line)
    if match is None:
        raise SpecError(number, "expected a field like `:param inputs.name: description`")
    directive = match["directive"]
    if directive not in ("param", "type"):
        raise SpecError(number, f"unknown field `:{directive}:`; expected `:param` or `:type`")
    target = (match["target"] or "").strip()
    group, dot, name = target.partition(".")
    if not dot or group not in GROUPS:
        raise SpecError(
            number, f"expected `:{directive} <group>.<name>:` with group inputs, parameters or outputs, got `{target}`"
        )
    if not _NAME_RE.match(name):
        raise SpecError(number, f"`{name}` is not a valid field name (letters, digits and _, not starting with a digit)")
    return directive, group, name, match["rest"].strip()  # type: ignore[return-value]


def _free_text(lines: list[str]) -> tuple[str, str]:
    text = "\n".join(lines).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    title = text.split("\n", 1)[0].strip() if text else ""
    return title, text


def _build_field(f: _Field) -> FieldSpec:
    description = " ".join(f.description).strip()
    if f.type_text is None:
        return FieldSpec(group=f.group, name=f.name, types=(TypeSpec(Kind.STR),), description=description)
    parts = list(_split_top_level(f.type_text, f.type_line))
    if not parts or not parts[0]:
        raise SpecError(f.type_line, f"expected a type for {f.group}.{f.name}, e.g. `str` or `FILE or image/png`")
    types = _parse_alternatives(parts[0], f.type_line)
    spec = FieldSpec(group=f.group, name=f.name, types=types, description=description)
    for part in parts[1:]:
        spec = _apply_modifier(spec, part, f.type_line)
    _check_field(spec, f.type_line)
    return spec


def _split_top_level(text: str, number: int) -> Iterator[str]:
    """Split on commas outside brackets and JSON strings."""
    depth, start, quoted, escaped = 0, 0, False, False
    for i, ch in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise SpecError(number, f"unbalanced `{ch}` in `{text}`")
        elif ch == "," and depth == 0:
            yield text[start:i].strip()
            start = i + 1
    if quoted or depth:
        raise SpecError(number, f"unterminated string or bracket in `{text}`")
    yield text[start:].strip()


def _parse_alternatives(text: str, number: int) -> tuple[TypeSpec, ...]:
    alternatives: list[TypeSpec] = []
    mimes: list[str] = []
    any_file = False
    for word in re.split(r"\s+or\s+", text.strip()):
        parsed = _parse_type(word.strip(), number)
        if parsed.kind is Kind.FILE:
            any_file = any_file or not parsed.mime
            mimes.extend(m for m in parsed.mime if m not in mimes)
        elif parsed in alternatives:
            raise SpecError(number, f"type `{word}` is listed twice")
        else:
            alternatives.append(parsed)
    if any_file or mimes:
        alternatives.append(TypeSpec(Kind.FILE, mime=tuple(mimes)))
    return tuple(alternatives)


def _parse_type(word: str, number: int) -> TypeSpec:
    lowered = word.lower()
    if lowered in _SCALARS:
        return TypeSpec(_SCALARS[lowered])
    if lowered == "file":
        return TypeSpec(Kind.FILE)
    if lowered.startswith("list[") and lowered.endswith("]"):
        inner = word[5:-1].strip()
        if not inner:
            raise SpecError(number, "expected an item type inside `list[...]`")
        items = _parse_alternatives(inner, number)
        if len(items) != 1:
            raise SpecError(number, f"`list[{inner}]` must name one item type")
        return TypeSpec(Kind.LIST, item=items[0])
    if _MIME_RE.match(lowered):
        return TypeSpec(Kind.FILE, mime=(lowered,))
    raise SpecError(
        number,
        f"unknown type `{word}`; expected str, int, float, bool, json, list[<type>], FILE or a MIME type "
        "such as image/png, joined by ` or `",
    )


def _json_literal(text: str, number: int, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        hint = f' (strings need double quotes: `{what} "{text}"`)' if text and text[0] not in '"[{' else ""
        raise SpecError(number, f"expected a JSON literal after `{what}`, got `{text}`{hint}") from None


def _number(text: str, number: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(number, f"expected a number after `{what}`, got `{text}`") from None
    if not math.isfinite(value):
        raise SpecError(number, f"expected a finite number after `{what}`, got `{text}`")
    return int(value) if value.is_integer() and abs(value) < 1e15 else value


def _apply_modifier(spec: FieldSpec, part: str, number: int) -> FieldSpec:
    words = part.split(None, 1)
    head = words[0].lower() if words else ""
    rest = words[1].strip() if len(words) > 1 else ""
    if part.lower() == "optional":
        return replace(spec, optional=True)
    if head == "default":
        return replace(spec, default=_json_literal(rest, number, "default"))
    if head == "one" and rest.lower().startswith("of"):
        choices = _json_literal(rest[2:].strip(), number, "one of")
        if not isinstance(choices, list) or not choices:
            raise SpecError(number, f"expected a non-empty JSON list after `one of`, got `{rest[2:].strip()}`")
        return replace(spec, choices=tuple(choices))
    size = _SIZE_RE.match(part)
    if size:
        limit = _number(size["n"], number, "max size")
        if limit <= 0:
            raise SpecError(number, "`max size` must be positive")
        return replace(spec, max_bytes=int(limit * _UNITS[size["unit"].upper()]))
    if head in ("min", "max") and rest and " " not in rest:
        return replace(spec, **{"minimum" if head == "min" else "maximum": _number(rest, number, head)})
    raise SpecError(
        number,
        f"unknown modifier `{part}`; expected optional, default <json>, one of <json list>, min <n>, max <n> "
        "or max size <n> MB",
    )


def _check_field(spec: FieldSpec, number: int) -> None:
    label = f"{spec.group}.{spec.name}"
    kinds = {t.kind for t in spec.types}
    numeric_or_sized = kinds & {Kind.INT, Kind.FLOAT, Kind.STR, Kind.LIST}
    if spec.group == "outputs" and (spec.has_default or spec.minimum is not None or spec.maximum is not None):
        raise SpecError(number, f"{label}: outputs take no default, min or max")
    if (spec.minimum is not None or spec.maximum is not None) and not numeric_or_sized:
        raise SpecError(number, f"{label}: min and max apply to int, float, str (length) and list (length)")
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        raise SpecError(number, f"{label}: min {spec.minimum} is greater than max {spec.maximum}")
    if spec.max_bytes is not None and not spec.has_file:
        raise SpecError(number, f"{label}: `max size` applies to files only")
    if spec.has_default and spec.has_file:
        raise SpecError(number, f"{label}: a file cannot have a default")
    if spec.has_default and spec.default is not None:
        problem = check_value(spec, spec.default)
        if problem:
            raise SpecError(number, f"{label}: default {json.dumps(spec.default)} is invalid: {problem}")
    if spec.choices is not None:
        for choice in spec.choices:
            problem = check_value(replace(spec, choices=None), choice)
            if problem:
                raise SpecError(number, f"{label}: choice {json.dumps(choice)} is invalid: {problem}")


# Value checks shared with request validation


def check_value(spec: FieldSpec, value: Any) -> str | None:
    """Return why a JSON value does not fit the field's non-file types, or None when it fits."""
    problems = []
    for type_ in spec.types:
        if type_.kind is Kind.FILE:
            continue
        problem = _check_type(type_, value)
        if problem is None:
            problem = _check_bounds(spec, type_, value)
            if problem is None:
                break
        problems.append(problem)
    else:
        return problems[0] if len(problems) == 1 else "expected " + " or ".join(t.render() for t in spec.types)
    if spec.choices is not None and value not in spec.choices:
        return f"must be one of {json.dumps(list(spec.choices), ensure_ascii=False)}"
    return None


def _check_type(type_: TypeSpec, value: Any) -> str | None:
    kind = type_.kind
    if kind is Kind.JSON:
        return None
    if kind is Kind.STR:
        return None if isinstance(value, str) else "expected a string"
    if kind is Kind.BOOL:
        return None if isinstance(value, bool) else "expected true or false"
    if kind is Kind.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected an integer"
    if kind is Kind.FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "expected a number"
    if kind is Kind.LIST:
        if not isinstance(value, list):
            return "expected a list"
        assert type_.item is not None
        if type_.item.kind is Kind.FILE:
            return None
        for i, item in enumerate(value):
            problem = _check_type(type_.item, item)
            if problem:
                return f"item {i}: {problem}"
        return None
    return "expected a file"


def _check_bounds(spec: FieldSpec, type_: TypeSpec, value: Any) -> str | None:
    if type_.kind in (Kind.STR, Kind.LIST):
        measured, what = len(value), "length"
    elif type_.kind in (Kind.INT, Kind.FLOAT):
        measured, what = value, "value"
    else:
        return None
    if spec.minimum is not None and measured < spec.minimum:
        return f"{what} must be at least {_num(spec.minimum)}"
    if spec.maximum is not None and measured > spec.maximum:
        return f"{what} must be at most {_num(spec.maximum)}"
    return None
