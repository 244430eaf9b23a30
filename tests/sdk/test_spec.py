"""The docstring grammar: what parses into which `ApiSpec`, and what is refused at which line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, SpecError, TypeSpec, check_value, parse_docstring

STR, INT, FLOAT, BOOL, JSON = (TypeSpec(k) for k in (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.JSON))


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]] | Any:
    """Extract payment details from a photographed receipt.

    :param inputs.image: Input image for visual analysis
    :type inputs.image: FILE or image/jpeg or image/png

    :param parameters.language: OCR language
    :type parameters.language: str, optional, default "eng"

    :param outputs.response: Generated response from the model
    :type outputs.response: str
    """


SEED = ApiSpec(
    title="Extract payment details from a photographed receipt.",
    description="Extract payment details from a photographed receipt.",
    inputs=(
        FieldSpec(
            group="inputs",
            name="image",
            types=(TypeSpec(Kind.FILE, mime=("image/jpeg", "image/png")),),
            description="Input image for visual analysis",
        ),
    ),
    parameters=(
        FieldSpec(
            group="parameters",
            name="language",
            types=(STR,),
            description="OCR language",
            optional=True,
            default="eng",
        ),
    ),
    outputs=(
        FieldSpec(
            group="outputs", name="response", types=(STR,), description="Generated response from the model"
        ),
    ),
)


def one_field(type_text: str, group: str = "parameters", name: str = "x") -> FieldSpec:
    spec = parse_docstring(f":param {group}.{name}: d\n:type {group}.{name}: {type_text}\n")
    field = spec.get(group, name)  # type: ignore[arg-type]
    assert field is not None
    return field


def refused(doc: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_docstring(doc)
    return caught.value


# The seed example


def test_seed_example_parses_exactly() -> None:
    assert parse_docstring(inference.__doc__) == SEED


def test_seed_example_field_properties() -> None:
    spec = parse_docstring(inference.__doc__)
    image, language, response = spec.inputs[0], spec.parameters[0], spec.outputs[0]
    assert image.required
    assert image.is_file
    assert image.file_type is not None
    assert image.file_type.accepts_mime("image/png")
    assert image.file_type.accepts_mime("IMAGE/JPEG; q=1")
    assert not image.file_type.accepts_mime("application/pdf")
    assert not language.required
    assert language.default == "eng"
    assert spec.output_names == ("response",)
    assert spec.has_file_inputs
    assert spec.get("parameters", "language") is language
    assert spec.get("inputs", "language") is None
    assert spec.group("outputs") == (response,)


def test_seed_example_renders_and_serialises_back() -> None:
    assert parse_docstring(SEED.to_docstring()) == SEED
    assert ApiSpec.from_dict(json.loads(json.dumps(SEED.to_dict()))) == SEED
    assert SEED.to_dict()["parameters"] == [
        {
            "name": "language",
            "types": [{"kind": "str"}],
            "description": "OCR language",
            "optional": True,
            "default": "eng",
        }
    ]


# Free text, blank lines and indentation


RUSSIAN = """Извлечение платёжных реквизитов из сфотографированного чека.

        Модель распознаёт ИНН, БИК и сумму «к оплате».


        Работает с русскими и казахскими чеками.

        :param inputs.image: Фотография чека
        :type inputs.image: image/jpeg or image/png, max size 10 MB

        :param parameters.language: Язык распознавания — «rus» или «kaz»
        :type parameters.language: str, default "rus", one of ["rus", "kaz"]

        :param outputs.inn: ИНН получателя
        """


def test_russian_free_text() -> None:
    spec = parse_docstring(RUSSIAN)
    assert spec.title == "Извлечение платёжных реквизитов из сфотографированного чека."
    assert spec.description == (
        "Извлечение платёжных реквизитов из сфотографированного чека.\n\n"
        "Модель распознаёт ИНН, БИК и сумму «к оплате».\n\n"
        "Работает с русскими и казахскими чеками."
    )
    assert spec.inputs[0].description == "Фотография чека"
    assert spec.inputs[0].max_bytes == 10 * 1024 * 1024
    assert spec.parameters[0].description == "Язык распознавания — «rus» или «kaz»"
    assert spec.parameters[0].choices == ("rus", "kaz")
    assert spec.outputs[0] == FieldSpec(
        group="outputs", name="inn", types=(STR,), description="ИНН получателя"
    )
    assert parse_docstring(spec.to_docstring()) == spec


MESSY = (
    "Summarise a document.\n"
    "        Second line of the description, indented by 8.\n"
    "   Third, indented by 3.\n"
    "\n"
    "\n"
    "\n"
    "\t:param inputs.document:   The document\n"
    "\n"
    "   to summarise, which may be\n"
    "\t\tlong.\n"
    "        :type inputs.document: application/pdf or text/plain\n"
    "\n"
    "\n"
    "   :param parameters.ratio: How much to keep\n"
    ":type parameters.ratio:   float,   min 0,max 1 ,  default 0.25\n"
    "\t\n"
    "        :param outputs.summary:\n"
    "        :type outputs.summary:    str\n"
    "\n"
)


def test_stray_blank_lines_and_mixed_indentation() -> None:
    spec = parse_docstring(MESSY)
    assert spec.title == "Summarise a document."
    assert spec.description == (
        "Summarise a document.\nSecond line of the description, indented by 8.\nThird, indented by 3."
    )
    document, ratio, summary = spec.inputs[0], spec.parameters[0], spec.outputs[0]
    assert document.description == "The document to summarise, which may be long."
    assert document.types == (TypeSpec(Kind.FILE, mime=("application/pdf", "text/plain")),)
    assert (ratio.types, ratio.minimum, ratio.maximum, ratio.default) == ((FLOAT,), 0, 1, 0.25)
    assert ratio.description == "How much to keep"
    assert summary.description == ""
    assert summary.types == (STR,)


def test_first_field_right_after_the_quotes() -> None:
    spec = parse_docstring(":param inputs.text: The text\n    :type inputs.text: str\n    ")
    assert spec.title == spec.description == ""
    assert spec.inputs == (FieldSpec(group="inputs", name="text", types=(STR,), description="The text"),)


def test_multi_line_and_multi_paragraph_param_description() -> None:
    spec = parse_docstring(
        """Title.

        :param parameters.prompt: What to ask the model,
            in plain words.

            A second paragraph: it joins the first.
        :type parameters.prompt: str
        """
    )
    assert spec.parameters[0].description == (
        "What to ask the model, in plain words. A second paragraph: it joins the first."
    )


def test_a_long_type_may_wrap_onto_the_next_lines() -> None:
    field = parse_docstring(
        """T.

        :param parameters.lang: Language
        :type parameters.lang: str, default "eng",
            one of ["eng", "rus",
                    "deu"]
        """
    ).parameters[0]
    assert field.default == "eng"
    assert field.choices == ("eng", "rus", "deu")


def test_text_after_the_fields_is_refused_not_added_to_the_description() -> None:
    error = refused("Title.\n\n:param inputs.x: X\n:type inputs.x: str\n\nMore prose.\n")
    assert error.line == 6
    assert "unexpected text after a `:type` line" in error.message
    assert "expected `:param` or `:type`" in error.message


def test_empty_docstrings() -> None:
    assert parse_docstring(None) == ApiSpec()
    assert parse_docstring("") == ApiSpec()
    assert parse_docstring("   \n\n  ") == ApiSpec()
    assert parse_docstring("Only a title.") == ApiSpec(title="Only a title.", description="Only a title.")


def test_param_without_type_is_str() -> None:
    spec = parse_docstring(
        "T.\n\n:param inputs.text: Some text\n:param outputs.n: Count\n:type outputs.n: int"
    )
    assert spec.inputs[0].types == (STR,)
    assert spec.inputs[0].required
    assert spec.outputs[0].types == (INT,)


def test_type_may_come_before_its_param() -> None:
    spec = parse_docstring(":type inputs.n: int\n:param inputs.n: N\n")
    assert spec.inputs[0] == FieldSpec(group="inputs", name="n", types=(INT,), description="N")


def test_same_name_in_different_groups_and_order_is_kept() -> None:
    spec = parse_docstring(
        ":param outputs.text: out\n:param inputs.text: in\n:param inputs.a: a\n:param parameters.text: p\n"
    )
    assert [f.name for f in spec.inputs] == ["text", "a"]
    assert [(f.group, f.description) for f in (*spec.inputs, *spec.parameters, *spec.outputs)] == [
        ("inputs", "in"),
        ("inputs", "a"),
        ("parameters", "p"),
        ("outputs", "out"),
    ]


def test_description_may_hold_colons() -> None:
    field = parse_docstring(":param inputs.url: A URL: https://example.org/a:b\n").inputs[0]
    assert field.description == "A URL: https://example.org/a:b"


# Types


@pytest.mark.parametrize(
    ("text", "types"),
    [
        ("str", (STR,)),
        ("int", (INT,)),
        ("float", (FLOAT,)),
        ("bool", (BOOL,)),
        ("json", (JSON,)),
        ("STR", (STR,)),
        ("Int", (INT,)),
        ("list[int]", (TypeSpec(Kind.LIST, item=INT),)),
        ("list[ str ]", (TypeSpec(Kind.LIST, item=STR),)),
        ("list[list[float]]", (TypeSpec(Kind.LIST, item=TypeSpec(Kind.LIST, item=FLOAT)),)),
        ("list[json]", (TypeSpec(Kind.LIST, item=JSON),)),
        ("FILE", (TypeSpec(Kind.FILE),)),
        ("file", (TypeSpec(Kind.FILE),)),
        ("image/png", (TypeSpec(Kind.FILE, mime=("image/png",)),)),
        ("IMAGE/PNG", (TypeSpec(Kind.FILE, mime=("image/png",)),)),
        ("image/*", (TypeSpec(Kind.FILE, mime=("image/*",)),)),
        ("application/pdf", (TypeSpec(Kind.FILE, mime=("application/pdf",)),)),
        ("audio/wav", (TypeSpec(Kind.FILE, mime=("audio/wav",)),)),
        ("application/vnd.ms-excel", (TypeSpec(Kind.FILE, mime=("application/vnd.ms-excel",)),)),
        ("FILE or image/jpeg or image/png", (TypeSpec(Kind.FILE, mime=("image/jpeg", "image/png")),)),
        ("image/jpeg or image/png", (TypeSpec(Kind.FILE, mime=("image/jpeg", "image/png")),)),
        ("image/png or image/png", (TypeSpec(Kind.FILE, mime=("image/png",)),)),
        ("int or str", (INT, STR)),
        ("str  or   int", (STR, INT)),
        ("str or FILE", (STR, TypeSpec(Kind.FILE))),
        ("image/png or str", (STR, TypeSpec(Kind.FILE, mime=("image/png",)))),
        ("list[int] or int", (TypeSpec(Kind.LIST, item=INT), INT)),
        ("list[FILE]", (TypeSpec(Kind.LIST, item=TypeSpec(Kind.FILE)),)),
        (
            "list[FILE or image/jpeg or image/png]",
            (TypeSpec(Kind.LIST, item=TypeSpec(Kind.FILE, mime=("image/jpeg", "image/png"))),),
        ),
        ("list[image/*]", (TypeSpec(Kind.LIST, item=TypeSpec(Kind.FILE, mime=("image/*",))),)),
    ],
)
def test_types(text: str, types: tuple[TypeSpec, ...]) -> None:
    assert one_field(text).types == types


def test_type_helpers() -> None:
    field = one_field("list[image/png] or str", group="inputs")
    assert field.has_file
    assert not field.is_file
    assert field.file_type is None
    assert field.type_text == "list[FILE or image/png] or str"
    assert TypeSpec(Kind.FILE, mime=("image/*",)).accepts_mime("image/webp")
    assert not TypeSpec(Kind.FILE, mime=("image/*",)).accepts_mime("imagex/webp")
    assert TypeSpec(Kind.FILE).accepts_mime("anything/at-all")


# Modifiers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("str, optional", {"optional": True}),
        ("str, Optional", {"optional": True}),
        ('str, default "eng"', {"default": "eng"}),
        ('str, default "a, b [c] {d}"', {"default": "a, b [c] {d}"}),
        ('str, default "say \\"hi\\", then go"', {"default": 'say "hi", then go'}),
        ("int, default 3", {"default": 3}),
        ("float, default 0.5", {"default": 0.5}),
        ("float, default 2", {"default": 2}),
        ("bool, default false", {"default": False}),
        ("str, default null", {"default": None}),
        ('json, default {"a": [1, 2], "b": null}', {"default": {"a": [1, 2], "b": None}}),
        ("list[int], default [1, 2, 3]", {"default": [1, 2, 3]}),
        ('str, one of ["eng", "rus"]', {"choices": ("eng", "rus")}),
        ("int, one of [1, 2, 3], default 2", {"choices": (1, 2, 3), "default": 2}),
        ('list[str], one of [["a"], ["b", "c"]]', {"choices": (["a"], ["b", "c"])}),
        ("int, min 1", {"minimum": 1}),
        ("int, max 10", {"maximum": 10}),
        ("float, min -0.5, max 2.5", {"minimum": -0.5, "maximum": 2.5}),
        ("float, min 1e-3", {"minimum": 0.001}),
        ("int, min 3, max 3", {"minimum": 3, "maximum": 3}),
        ("str, min 1, max 280", {"minimum": 1, "maximum": 280}),
        ("list[str], max 5", {"maximum": 5}),
        ("int, MIN 1, Max 2", {"minimum": 1, "maximum": 2}),
        ("FILE, max size 10 MB", {"max_bytes": 10 * 1024**2}),
        ("FILE, max size 1.5 MB", {"max_bytes": 1536 * 1024}),
        ("FILE, max size 512 KB", {"max_bytes": 512 * 1024}),
        ("FILE, max size 2 GB", {"max_bytes": 2 * 1024**3}),
        ("FILE, max size 10MB", {"max_bytes": 10 * 1024**2}),
        ("FILE, MAX SIZE 1 mb", {"max_bytes": 1024**2}),
        ("list[image/png], max size 1 MB, max 4", {"max_bytes": 1024**2, "maximum": 4}),
        ("str or FILE, optional, max size 1 MB", {"optional": True, "max_bytes": 1024**2}),
        (
            'str, optional, default "b", one of ["a", "b"], min 1, max 3',
            {"optional": True, "default": "b", "choices": ("a", "b"), "minimum": 1, "maximum": 3},
        ),
    ],
)
def test_modifiers(text: str, expected: dict[str, Any]) -> None:
    field = one_field(text, group="inputs")
    defaults = {"optional": False, "choices": None, "minimum": None, "maximum": None, "max_bytes": None}
    for key, value in {**defaults, **expected}.items():
        assert getattr(field, key) == value, key
        assert type(getattr(field, key)) is type(value), key
    if "default" in expected:
        assert field.has_default
        assert field.default == expected["default"]
        assert not field.required
    else:
        assert not field.has_default
        assert field.required is not field.optional


def test_fields_render_back_to_the_same_spec() -> None:
    doc = (
        "T.\n\n"
        ":param inputs.a: A\n"
        ":type inputs.a: list[FILE or image/png] or str, optional, max size 1.5 MB, max 3\n"
        ":param parameters.b: B\n:type parameters.b: int or bool, default 2, one of [1, 2, true], min 0\n"
        ':param parameters.c: C\n:type parameters.c: str, default "line\\u2028separator"\n'
        ":param outputs.c: C\n:type outputs.c: image/*\n"
    )
    spec = parse_docstring(doc)
    assert parse_docstring(spec.to_docstring()) == spec
    assert ApiSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# Values


def test_check_value() -> None:
    field = one_field('int or str, one of [1, 2, "x"]')
    assert check_value(field, 1) is None
    assert check_value(field, "x") is None
    assert check_value(field, 3) == 'must be one of [1, 2, "x"]'
    assert check_value(field, 1.5) == "expected int or str"
    assert check_value(one_field("int, min 1, max 3"), 4) == "value must be at most 3"
    assert check_value(one_field("str, min 2"), "a") == "length must be at least 2"
    assert check_value(one_field("list[int]"), [1, "a"]) == "item 1: expected an integer"
    assert check_value(one_field("bool"), 1) == "expected true or false"
    assert check_value(one_field("float"), float("nan")) == "expected a finite number"
    assert check_value(one_field("float"), 10**400) is None
    assert check_value(one_field("json"), {"any": ["thing"]}) is None
    assert (
        check_value(one_field("json"), {"x": [float("inf")]})
        == "expected a JSON value (NaN and Infinity are not JSON)"
    )


def test_choices_tell_true_from_one() -> None:
    field = one_field("int or bool, one of [1, 2]")
    assert check_value(field, 1) is None
    assert check_value(field, True) == "must be one of [1, 2]"
    assert check_value(one_field("json, one of [[0], [1]]"), [False]) is not None
    assert check_value(one_field("json, one of [[0], [1]]"), [0]) is None


# Errors: each names the line and what was expected


def assert_error(doc: str, line: int, *fragments: str) -> None:
    error = refused(doc)
    assert error.line == line, error
    for fragment in fragments:
        assert fragment in error.message, error.message
    assert str(error).startswith(f"docstring line {line}: ")
    assert isinstance(error, ValueError)


HEAD = "Title.\n\n    :param inputs.x: X\n"  # the next line is line 4


@pytest.mark.parametrize(
    ("doc", "line", "fragments"),
    [
        pytest.param(
            "Title.\n\n    :type inputs.image: FILE\n",
            3,
            ["`:type inputs.image:` has no matching `:param inputs.image:`"],
            id="type-without-param",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, required\n",
            4,
            ["unknown modifier `required`", "expected optional, default <json>, one of <json list>, min <n>"],
            id="unknown-modifier",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, optional yes\n",
            4,
            ["unknown modifier `optional yes`"],
            id="modifier-with-extra-words",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str,\n",
            4,
            ["unknown modifier nothing (a stray comma?)"],
            id="stray-comma",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: string\n",
            4,
            ["unknown type `string`", "expected str, int, float, bool, json, list[<type>], FILE or a MIME"],
            id="unknown-type",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str or strng\n",
            4,
            ["unknown type `strng`"],
            id="unknown-alternative",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: list[image/png or str]\n",
            4,
            ["must name one item type"],
            id="list-of-two-types",
        ),
        pytest.param(HEAD + "    :type inputs.x: list[]\n", 4, ["expected an item type"], id="empty-list"),
        pytest.param(HEAD + "    :type inputs.x: str or str\n", 4, ["`str` is listed twice"], id="twice"),
        pytest.param(HEAD + "    :type inputs.x:\n", 4, ["expected a type for inputs.x"], id="no-type"),
        pytest.param(
            HEAD + "    :type inputs.x: , optional\n", 4, ["expected a type for"], id="only-modifiers"
        ),
        pytest.param(
            "Title.\n\n:param input.x: X\n",
            3,
            ["expected `:param <group>.<name>:` with group inputs, parameters or outputs, got `input.x`"],
            id="unknown-group",
        ),
        pytest.param(
            "Title.\n:param x: X\n",
            2,
            ["with group inputs, parameters or outputs, got `x`"],
            id="no-group",
        ),
        pytest.param(
            HEAD + "    :type x: str\n",
            4,
            ["expected `:type <group>.<name>:`"],
            id="type-without-group",
        ),
        pytest.param(
            HEAD + "    :param inputs.1x: X\n", 4, ["`1x` is not a valid field name"], id="bad-name"
        ),
        pytest.param(
            HEAD + "    :param inputs.a.b: X\n", 4, ["`a.b` is not a valid field name"], id="dotted-name"
        ),
        pytest.param(
            HEAD + "    :returns: the answer\n",
            4,
            ["unknown field `:returns:`", "expected `:param` or `:type`"],
            id="unknown-directive",
        ),
        pytest.param(
            HEAD + "    :rtype inputs.x: str\n",
            4,
            ["unknown field `:rtype:`", "expected `:param` or `:type`"],
            id="unknown-directive-with-target",
        ),
        pytest.param(
            HEAD + "    : nothing here\n",
            4,
            ["expected a field like `:param inputs.name: description`"],
            id="not-a-field",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str\n\n    :param inputs.x: again\n",
            6,
            ["inputs.x is declared twice (first on line 3)"],
            id="duplicate-param",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str\n    :type inputs.x: int\n",
            5,
            ["inputs.x has two `:type` lines (first on line 4)"],
            id="duplicate-type",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: int, default "3"\n',
            4,
            ['inputs.x: default "3" is invalid: expected an integer'],
            id="default-wrong-type",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: bool, default 1\n",
            4,
            ["default 1 is invalid: expected true or false"],
            id="default-number-for-bool",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: str, default "fr", one of ["en", "ru"]\n',
            4,
            ['default "fr" is invalid: must be one of ["en", "ru"]'],
            id="default-not-a-choice",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: int, min 5, default 1\n",
            4,
            ["default 1 is invalid: value must be at least 5"],
            id="default-below-min",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: str, max 2, default "long"\n',
            4,
            ['default "long" is invalid: length must be at most 2'],
            id="default-too-long",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: int, one of [1, "a"]\n',
            4,
            ['choice "a" is invalid: expected an integer'],
            id="choice-wrong-type",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: int, min 5, max 1\n",
            4,
            ["inputs.x: min 5 is greater than max 1"],
            id="min-greater-than-max",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, max size 1 MB\n",
            4,
            ["inputs.x: `max size` applies to files only"],
            id="max-size-on-str",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: FILE, max size 10\n",
            4,
            ["unknown modifier `max size 10`", "max size <n> MB"],
            id="max-size-without-unit",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: FILE, max size 0 MB\n",
            4,
            ["expected a positive size after `max size`"],
            id="max-size-zero",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: bool, min 1\n",
            4,
            ["min and max apply to int, float, str (length) and list (length)"],
            id="min-on-bool",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: int, min ten\n",
            4,
            ["expected a number after `min`, got `ten`"],
            id="min-not-a-number",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: float, max inf\n",
            4,
            ["expected a finite number after `max`"],
            id="max-infinite",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: FILE, default null\n",
            4,
            ["inputs.x: a file cannot have a default"],
            id="file-default",
        ),
        pytest.param(
            "T.\n:param outputs.y: Y\n:type outputs.y: int, default 1\n",
            3,
            ["outputs.y: outputs take no default, min or max"],
            id="output-default",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, default eng\n",
            4,
            ["a JSON literal after `default`, got `eng`", 'strings need double quotes: `default "eng"`'],
            id="default-not-json",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, default\n",
            4,
            ["expected a JSON literal after `default`, got ``"],
            id="default-empty",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: float, default NaN\n",
            4,
            ["expected a JSON literal after `default`, got `NaN`"],
            id="default-nan",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: json, default 1e999\n",
            4,
            ["expected a JSON literal after `default`, got `1e999`"],
            id="default-overflow",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, one of ['a', 'b']\n",
            4,
            ["expected a JSON literal after `one of`, got `['a', 'b']`"],
            id="one-of-not-json",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: str, one of "a"\n',
            4,
            ["expected a non-empty JSON list after `one of`"],
            id="one-of-not-a-list",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, one of []\n",
            4,
            ["expected a non-empty JSON list after `one of`"],
            id="one-of-empty",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: list[int\n",
            4,
            ["unclosed bracket in `list[int`", "expected `]` at the end"],
            id="unclosed-bracket",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: list[int]]\n",
            4,
            ["unbalanced `]`", "expected nothing to close there"],
            id="extra-bracket",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: json, default [1, {"a": 2]}\n',
            4,
            ["unbalanced `]`", "expected `}` there"],
            id="crossed-brackets",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: str, one of ["a", "b"\n',
            4,
            ["unclosed bracket", "expected `]` at the end"],
            id="unclosed-one-of",
        ),
        pytest.param(
            HEAD + '    :type inputs.x: str, default "abc\n',
            4,
            ["unterminated string", 'expected a closing `"`'],
            id="unterminated-string",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: str, optional, optional\n",
            4,
            ["`optional` is given twice for inputs.x"],
            id="optional-twice",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: int, default 0, default 1\n",
            4,
            ["`default` is given twice"],
            id="default-twice",
        ),
        pytest.param(
            HEAD + "    :type inputs.x: int, min 0, min 1\n",
            4,
            ["`min` is given twice"],
            id="min-twice",
        ),
    ],
)
def test_errors_name_the_line_and_what_was_expected(doc: str, line: int, fragments: list[str]) -> None:
    assert_error(doc, line, *fragments)


def test_errors_after_a_wrapped_type_name_the_type_line() -> None:
    doc = "T.\n\n:param inputs.x: X\n:type inputs.x: str,\n    optinal\n"
    assert_error(doc, 4, "unknown modifier `optinal`")


def test_line_numbers_count_from_the_opening_quotes() -> None:
    def module_function() -> None:
        """Title.

        :param inputs.x: X
        :type inputs.x: nope
        """

    assert_error(module_function.__doc__ or "", 4, "unknown type `nope`")
