"""Properties of the docstring grammar: specs survive rendering and serialising; no text crashes it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.sdk.spec import (
    GROUPS,
    ApiSpec,
    FieldSpec,
    Kind,
    SpecError,
    TypeSpec,
    check_value,
    parse_docstring,
)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that stays on one line: no control characters, surrogates or line/paragraph separators.
LINE_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
MIMES = st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,6}/(\*|[a-z0-9][a-z0-9.+-]{0,6})", fullmatch=True)


def one_line(*, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(LINE_CHARS, min_size=min_size, max_size=30).map(str.strip)


descriptions = one_line()
free_lines = one_line(min_size=1).filter(lambda s: s != "" and not s.startswith(":"))


@st.composite
def module_texts(draw: st.DrawFn) -> tuple[str, str]:
    """(title, description): paragraphs of lines; the title is the first line."""
    paragraphs = draw(st.lists(st.lists(free_lines, min_size=1, max_size=3), max_size=3))
    description = "\n\n".join("\n".join(lines) for lines in paragraphs)
    return description.split("\n", 1)[0], description


scalars = st.sampled_from([TypeSpec(k) for k in (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.JSON)])
files = st.lists(MIMES, unique=True, max_size=3).map(lambda m: TypeSpec(Kind.FILE, mime=tuple(m)))


def list_of(items: st.SearchStrategy[TypeSpec]) -> st.SearchStrategy[TypeSpec]:
    return items.map(lambda t: TypeSpec(Kind.LIST, item=t))


# Alternatives other than a file: scalars and (nested) lists, whose items may be files.
plain_types = scalars | list_of(st.recursive(scalars | files, list_of, max_leaves=2))


@st.composite
def type_tuples(draw: st.DrawFn) -> tuple[TypeSpec, ...]:
    """Distinct alternatives, at most one of them a file and that one last (as the parser builds them)."""
    others = draw(st.lists(plain_types, unique=True, max_size=3))
    file = draw(st.none() | files)
    types = (*others, *([file] if file is not None else []))
    return types or (TypeSpec(Kind.STR),)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def values_of(type_: TypeSpec) -> st.SearchStrategy[Any]:
    """JSON values of one type (possibly out of the field's bounds: callers check)."""
    kind = type_.kind
    if kind is Kind.LIST:
        assert type_.item is not None
        return st.lists(values_of(type_.item), max_size=3)
    by_kind: dict[Kind, st.SearchStrategy[Any]] = {
        Kind.STR: st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
        Kind.INT: st.integers(-(10**20), 10**20),
        Kind.FLOAT: st.floats(allow_nan=False, allow_infinity=False),
        Kind.BOOL: st.booleans(),
        Kind.JSON: json_values,
        Kind.FILE: st.just({"object": "bucket/key"}),
    }
    return by_kind[kind]


bounds = st.integers(-1000, 1000) | st.floats(
    allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30
)


@st.composite
def fields(draw: st.DrawFn, group: str, name: str) -> FieldSpec:
    types = draw(type_tuples())
    field = FieldSpec(group=group, name=name, types=types, description=draw(descriptions))  # type: ignore[arg-type]
    field = replace(field, optional=draw(st.booleans()))
    kinds = {t.kind for t in types}
    if group != "outputs" and kinds & {Kind.INT, Kind.FLOAT, Kind.STR, Kind.LIST}:
        low, high = sorted(draw(st.lists(bounds, min_size=2, max_size=2)))
        field = replace(
            field, minimum=draw(st.none() | st.just(low)), maximum=draw(st.none() | st.just(high))
        )
    if field.has_file:
        field = replace(field, max_bytes=draw(st.none() | st.integers(1, 2**40)))
    plain = [t for t in types if t.kind is not Kind.FILE]
    if not plain:
        return field
    candidates = draw(st.lists(st.one_of([values_of(t) for t in plain]), max_size=4))
    valid = [v for v in candidates if check_value(field, v) is None]
    if valid and draw(st.booleans()):
        field = replace(field, choices=tuple(valid))
    if group != "outputs" and not field.has_file and draw(st.booleans()):
        pool = list(field.choices) if field.choices is not None else valid
        field = replace(field, default=draw(st.sampled_from([None, *pool])))
    return field


@st.composite
def api_specs(draw: st.DrawFn) -> ApiSpec:
    title, description = draw(module_texts())
    grouped: dict[str, tuple[FieldSpec, ...]] = {}
    for group in GROUPS:
        names = draw(st.lists(NAMES, unique=True, max_size=3))
        grouped[group] = tuple(draw(fields(group, name)) for name in names)
    return ApiSpec(title=title, description=description, **grouped)  # type: ignore[arg-type]


@FAST
@given(api_specs())
def test_rendered_docstring_parses_back(spec: ApiSpec) -> None:
    assert parse_docstring(spec.to_docstring()) == spec


@FAST
@given(api_specs())
def test_dict_form_round_trips(spec: ApiSpec) -> None:
    assert ApiSpec.from_dict(spec.to_dict()) == spec
    assert ApiSpec.from_dict(json.loads(json.dumps(spec.to_dict(), allow_nan=False))) == spec


def parse_error(text: str) -> SpecError | None:
    """The `SpecError` parsing raises, or None; any other exception fails the test."""
    try:
        assert isinstance(parse_docstring(text), ApiSpec)
    except SpecError as error:
        return error
    return None


def assert_parses_or_names_a_line(text: str) -> None:
    error = parse_error(text)
    if error is not None:
        assert 1 <= error.line <= len(text.expandtabs().splitlines()), (error, text)
        assert error.message


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_parses_or_fails_with_a_line(text: str) -> None:
    assert_parses_or_names_a_line(text)


FIELD_FRAGMENTS = [
    ":param inputs.",
    ":param parameters.",
    ":param outputs.",
    ":type inputs.",
    ":type parameters.",
    ":type ",
    ":param ",
    ":returns:",
    "x",
    "y",
    ": ",
    ":",
    "\n",
    "\n    ",
    "\t",
    " ",
]
TYPE_FRAGMENTS = [
    "str",
    "int",
    "float",
    "bool",
    "json",
    "FILE",
    "image/png",
    "image/*",
    "list[",
    "]",
    "[",
    "{",
    "}",
    '"',
    "\\",
    " or ",
    ",",
    ", optional",
    ", default ",
    ", one of ",
    ", min ",
    ", max ",
    ", max size ",
    " MB",
    " GB",
    "1",
    "-2.5",
    "1e999",
    "NaN",
    "null",
    "true",
    '"eng"',
    "\u2028",
    "Заголовок",
]
FRAGMENTS = FIELD_FRAGMENTS + TYPE_FRAGMENTS


LINE_STARTS = [
    ":param inputs.x: ",
    ":param inputs.y:",
    ":param parameters.x: ",
    ":param outputs.x: ",
    ":type inputs.x: ",
    ":type inputs.y: ",
    ":type parameters.x: ",
    ":type outputs.x: ",
    "    ",
    "",
]
grammar_like_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=40).map("".join)
grammar_like_lines = st.lists(
    st.tuples(
        st.sampled_from(LINE_STARTS),
        st.lists(st.sampled_from(TYPE_FRAGMENTS) | st.text(max_size=2), max_size=6).map("".join),
    ).map("".join),
    max_size=8,
).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(grammar_like_text | grammar_like_lines)
def test_grammar_like_text_parses_or_fails_with_a_line(text: str) -> None:
    assert_parses_or_names_a_line(text)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["str", "int", "float", "bool", "json", "list[int]", "FILE", "int or str"]),
    st.lists(st.sampled_from(TYPE_FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join),
)
def test_type_lines_parse_or_fail_on_their_line(type_text: str, tail: str) -> None:
    doc = f"Title.\n\n:param parameters.p: P\n:type parameters.p: {type_text}{tail}"
    error = parse_error(doc)
    if error is not None and len(doc.splitlines()) == 4:
        assert error.line == 4, error
