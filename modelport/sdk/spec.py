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
from functools import cached_property
from typing import Any, Literal

__all__ = ["ApiSpec", "FieldSpec", "Group", "Kind", "SpecError", "TypeSpec", "parse_docstring"]

Group = Literal["inputs", "parameters", "outputs"]
GROUPS: tuple[Group, ...] = ("inputs", "parameters", "outputs")
_GROUP_NAMES: dict[str, Group] = {g: g for g in GROUPS}

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
    stream: bool = False
    """An output that `inference` yields piece by piece (`str` pieces or `json` items)."""

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
            mods.append(f"default {_dump(self.default)}")
        if self.choices is not None:
            mods.append(f"one of {_dump(list(self.choices))}")
        if self.minimum is not None:
            mods.append(f"min {_num(self.minimum)}")
        if self.maximum is not None:
            mods.append(f"max {_num(self.maximum)}")
        if self.max_bytes is not None:
            mods.append(f"max size {_num(self.max_bytes / _UNITS['MB'])} MB")
        if self.stream:
            mods.append("stream")
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
        if self.stream:
            out["stream"] = True
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
            stream=data.get("stream", False),
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

    @cached_property
    def stream_output(self) -> FieldSpec | None:
        """The output `inference` yields piece by piece (None: the module answers all at once)."""
        return next((f for f in self.outputs if f.stream), None)

    @property
    def has_file_inputs(self) -> bool:
        return any(f.has_file for f in self.inputs)

    @property
    def has_file_outputs(self) -> bool:
        return any(f.has_file for f in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            **{g: [f.to_dict() for f in self.group(g)] for g in GROUPS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiSpec:
        def load(group: Group) -> tuple[FieldSpec, ...]:
            return tuple(FieldSpec.from_dict(group, f) for f in data.get(group, ()))

        return cls(
            title=data.get("title", ""),
            description=data.get("description", ""),
            inputs=load("inputs"),
            parameters=load("parameters"),
            outputs=load("outputs"),
        )

    def to_docstring(self) -> str:
        """Render the spec back into the grammar; `parse_docstring(spec.to_docstring()) == spec`."""
        lines = [self.description, ""] if self.description else []
        for f in (*self.inputs, *self.parameters, *self.outputs):
            lines.append(f":param {f.group}.{f.name}: {f.description}".rstrip())
            lines.append(f":type {f.group}.{f.name}: {', '.join([f.type_text, *f.render_modifiers()])}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def _dump(value: Any) -> str:
    """JSON on one line: also escape the characters `str.splitlines` breaks on that JSON leaves alone."""
    text = json.dumps(value, ensure_ascii=False)
    return text.translate({ord(ch): f"\\u{ord(ch):04x}" for ch in "\x85\u2028\u2029"})


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
    """Parse a docstring into an `ApiSpec`, or raise `SpecError` naming the line at fault.

    Lines that follow a field and are not fields themselves continue it: a description may run on over
    several lines and paragraphs, a type may wrap onto the lines right below it.
    """
    free, fields, pending_types = _scan((doc or "").expandtabs().splitlines())
    _attach_types(fields, pending_types)
    title, description = _free_text(free)
    built = [_build_field(f) for f in fields.values()]
    streams = [f.type_line for f, spec in zip(fields.values(), built, strict=True) if spec.stream]
    if len(streams) > 1:
        raise SpecError(streams[1], "at most one output may be declared `stream`")
    return ApiSpec(
        title=title,
        description=description,
        inputs=tuple(f for f in built if f.group == "inputs"),
        parameters=tuple(f for f in built if f.group == "parameters"),
        outputs=tuple(f for f in built if f.group == "outputs"),
    )


_PendingType = tuple[str, str, list[str], int]  # group, name, text parts, line


def _scan(lines: list[str]) -> tuple[list[str], dict[tuple[str, str], _Field], list[_PendingType]]:
    """Sort lines into free text (before the first field), `:param` fields and `:type` lines."""
    scan = _Scan()
    for number, raw in enumerate(lines, start=1):
        scan.feed(number, raw.strip())
    return scan.free, scan.fields, scan.types


@dataclass
class _Scan:
    free: list[str] = field(default_factory=list)
    fields: dict[tuple[str, str], _Field] = field(default_factory=dict)
    types: list[_PendingType] = field(default_factory=list)
    current: list[str] | None = None  # the text that a following non-field line continues
    in_type: bool = False

    def feed(self, number: int, line: str) -> None:
        if line.startswith(":"):
            self._field(number, line)
        elif not self.fields and not self.types:
            self.free.append(line)
        elif line:
            if self.current is None:
                raise SpecError(
                    number,
                    "unexpected text after a `:type` line; expected `:param` or `:type` "
                    "(the module description goes before the first field)",
                )
            self.current.append(line)
        elif self.in_type:
            self.current = None  # a type may wrap onto the next line, not across a blank line

    def _field(self, number: int, line: str) -> None:
        directive, group, name, rest = _split_field(line, number)
        self.in_type = directive == "type"
        if self.in_type:
            self.types.append((group, name, [rest], number))
            self.current = self.types[-1][2]
            return
        key = (group, name)
        if key in self.fields:
            first = self.fields[key].line
            raise SpecError(number, f"{group}.{name} is declared twice (first on line {first})")
        self.fields[key] = _Field(group, name, number, [rest] if rest else [])
        self.current = self.fields[key].description


def _attach_types(fields: dict[tuple[str, str], _Field], pending_types: list[_PendingType]) -> None:
    for group, name, parts, number in pending_types:
        text = " ".join(p for p in parts if p)
        target = fields.get((group, name))
        if target is None:
            raise SpecError(number, f"`:type {group}.{name}:` has no matching `:param {group}.{name}:`")
        if target.type_text is not None:
            first = target.type_line
            raise SpecError(number, f"{group}.{name} has two `:type` lines (first on line {first})")
        target.type_text, target.type_line = text, number


def _split_field(line: str, number: int) -> tuple[str, Group, str, str]:
    match = _FIELD_RE.match(line)
    if match is None:
        raise SpecError(number, "expected a field like `:param inputs.name: description`")
    directive = match["directive"]
    if directive not in ("param", "type"):
        raise SpecError(number, f"unknown field `:{directive}:`; expected `:param` or `:type`")
    target = (match["target"] or "").strip()
    prefix, dot, name = target.partition(".")
    group = _GROUP_NAMES.get(prefix)
    if not dot or group is None:
        raise SpecError(
            number,
            f"expected `:{directive} <group>.<name>:` with group inputs, parameters or outputs, "
            f"got `{target}`",
        )
    if not _NAME_RE.fullmatch(name):
        raise SpecError(
            number, f"`{name}` is not a valid field name (letters, digits and _, not starting with a digit)"
        )
    return directive, group, name, match["rest"].strip()


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
        raise SpecError(
            f.type_line, f"expected a type for {f.group}.{f.name}, e.g. `str` or `FILE or image/png`"
        )
    types = _parse_alternatives(parts[0], f.type_line)
    spec = FieldSpec(group=f.group, name=f.name, types=types, description=description)
    for part in parts[1:]:
        spec = _apply_modifier(spec, part, f.type_line)
    _check_field(spec, f.type_line)
    return spec


_CLOSERS = {"[": "]", "{": "}"}


def _split_top_level(text: str, number: int, separator: str = ",") -> list[str]:
    """Split on the regex `separator` where it stands outside brackets and JSON strings."""
    masked = ["\0"] * len(text)
    for i in _top_level_positions(text, number):
        masked[i] = text[i]
    parts, start = [], 0
    for match in re.finditer(separator, "".join(masked)):
        parts.append(text[start : match.start()].strip())
        start = match.end()
    return [*parts, text[start:].strip()]


def _top_level_positions(text: str, number: int) -> Iterator[int]:
    """Yield the positions outside brackets and JSON strings; check that both are closed."""
    stack: list[str] = []
    quoted = escaped = False
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
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "]}":
            expected = f"`{stack[-1]}`" if stack else "nothing to close"
            if not stack or stack.pop() != ch:
                raise SpecError(number, f"unbalanced `{ch}` in `{text}`; expected {expected} there")
        elif not stack:
            yield i
    if quoted:
        raise SpecError(number, f'unterminated string in `{text}`; expected a closing `"`')
    if stack:
        closing = "".join(reversed(stack))
        raise SpecError(number, f"unclosed bracket in `{text}`; expected `{closing}` at the end")


def _parse_alternatives(text: str, number: int) -> tuple[TypeSpec, ...]:
    alternatives: list[TypeSpec] = []
    mimes: list[str] = []
    any_file = False
    for word in _split_top_level(text, number, r"\s+or\s+"):
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
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError:
        hint = f' (strings need double quotes: `{what} "{text}"`)' if text and text[0] not in '"[{' else ""
        raise SpecError(number, f"expected a JSON literal after `{what}`, got `{text}`{hint}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _number(text: str, number: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(number, f"expected a number after `{what}`, got `{text}`") from None
    if not math.isfinite(value):
        raise SpecError(number, f"expected a finite number after `{what}`, got `{text}`")
    return int(value) if value.is_integer() and abs(value) < 1e15 else value


_ONE_OF_RE = re.compile(r"^one\s+of\b\s*(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_BOUND_RE = re.compile(r"^(?P<head>min|max)\s+(?P<n>\S+)$", re.IGNORECASE)
_MODIFIER_WORDS = {
    "optional": "optional",
    "default": "default",
    "choices": "one of",
    "minimum": "min",
    "maximum": "max",
    "max_bytes": "max size",
    "stream": "stream",
}


def _apply_modifier(spec: FieldSpec, part: str, number: int) -> FieldSpec:
    key, value = _parse_modifier(part, number)
    current = getattr(spec, key)
    if spec.has_default if key == "default" else current is not None and current is not False:
        raise SpecError(number, f"`{_MODIFIER_WORDS[key]}` is given twice for {spec.group}.{spec.name}")
    return replace(spec, **{key: value})


def _parse_modifier(part: str, number: int) -> tuple[str, Any]:
    """One modifier as the `FieldSpec` attribute it sets and its value."""
    head, _, rest = part.partition(" ")
    head, rest = head.lower(), rest.strip()
    if part.lower() == "optional":
        return "optional", True
    if part.lower() == "stream":
        return "stream", True
    if head == "default":
        return "default", _json_literal(rest, number, "default")
    if one_of := _ONE_OF_RE.match(part):
        return "choices", _choices(one_of["rest"].strip(), number)
    if size := _SIZE_RE.match(part):
        return "max_bytes", _size(size["n"], size["unit"], number)
    if bound := _BOUND_RE.match(part):
        what = bound["head"].lower()
        return ("minimum" if what == "min" else "maximum"), _number(bound["n"], number, what)
    found = f"`{part}`" if part else "nothing (a stray comma?)"
    raise SpecError(
        number,
        f"unknown modifier {found}; expected optional, default <json>, one of <json list>, min <n>, max <n> "
        "max size <n> MB or stream",
    )


def _choices(text: str, number: int) -> tuple[Any, ...]:
    choices = _json_literal(text, number, "one of")
    if not isinstance(choices, list) or not choices:
        raise SpecError(number, f"expected a non-empty JSON list after `one of`, got `{text}`")
    return tuple(choices)


def _size(text: str, unit: str, number: int) -> int:
    limit = _number(text, number, "max size") * _UNITS[unit.upper()]
    if not math.isfinite(limit):
        raise SpecError(number, f"expected a finite size after `max size`, got `{text} {unit}`")
    size = round(limit)
    if size < 1:
        raise SpecError(number, f"expected a positive size after `max size`, got `{text} {unit}`")
    return size


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
    if spec.stream and (spec.group != "outputs" or len(spec.types) != 1 or kinds - {Kind.STR, Kind.JSON}):
        raise SpecError(number, f"{label}: only an output of type `str` or `json` may be declared `stream`")
    if spec.stream and spec.choices is not None:
        raise SpecError(number, f"{label}: a `stream` output takes no `one of`")
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
        return problems[0] if len(problems) == 1 else f"expected {spec.type_text}"
    if spec.choices is not None and not any(_json_equal(value, c) for c in spec.choices):
        return f"must be one of {json.dumps(list(spec.choices), ensure_ascii=False)}"
    return None


def _check_type(type_: TypeSpec, value: Any) -> str | None:
    kind = type_.kind
    if kind is Kind.JSON:
        return None if _is_json(value) else "expected a JSON value (NaN and Infinity are not JSON)"
    if kind is Kind.STR:
        return None if isinstance(value, str) else "expected a string"
    if kind is Kind.BOOL:
        return None if isinstance(value, bool) else "expected true or false"
    if kind is Kind.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected an integer"
    if kind is Kind.FLOAT:
        if isinstance(value, float):
            return None if math.isfinite(value) else "expected a finite number"
        return None if isinstance(value, int) and not isinstance(value, bool) else "expected a number"
    if kind is Kind.LIST:
        if not isinstance(value, list):
            return "expected a list"
        assert type_.item is not None
        if type_.item.kind is Kind.FILE:
            return None
        if _plain_scalars(type_.item.kind, value):
            return None
        for i, item in enumerate(value):
            problem = _check_type(type_.item, item)
            if problem:
                return f"item {i}: {problem}"
        return None
    return "expected a file"


_SCALAR_TYPES = {
    Kind.FLOAT: frozenset({float, int}),
    Kind.INT: frozenset({int}),
    Kind.STR: frozenset({str}),
    Kind.BOOL: frozenset({bool}),
}


def _plain_scalars(kind: Kind, values: list[Any]) -> bool:
    """Whether every item of `values` is a valid `kind` scalar, checked in C loops (the common case, such as
    a vector of numbers); False sends the list through the item-by-item check, which says what is wrong."""
    allowed = _SCALAR_TYPES.get(kind)
    if allowed is None or not set(map(type, values)) <= allowed:
        return False
    return kind is not Kind.FLOAT or all(map(math.isfinite, values))


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


def _is_json(value: Any) -> bool:
    """Whether a decoded value is JSON: no NaN or Infinity at any depth (checked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return True


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality in which true and 1 differ; recurses no deeper than the shallower value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)
