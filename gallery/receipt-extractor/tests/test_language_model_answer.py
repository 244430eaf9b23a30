"""Tests of the extractor's `answer` input, a language model's reading of the receipt checked against its
text (the model picks, the text confirms), and of the `receipt-payments-llm` pipeline that sends it."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from modelport.control.pipelines import compose
from modelport.core.manifests import ApiManifest, PipelineManifest, load_documents, parse_document
from modelport.sdk import ApiSpec, parse_docstring

MODULE_DIR = Path(__file__).resolve().parents[1]
MANIFESTS = MODULE_DIR.parent / "receipt-payments" / "llm.yaml"
PLAIN_MANIFESTS = MODULE_DIR.parent / "receipt-payments" / "manifests.yaml"


def _import_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gallery_receipt_extractor", MODULE_DIR / "inference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


extractor = _import_module()

SUPERMARKET = """СУПЕРМАРКЕТ ВЕСНА
ПАО «Сибирский дом»
г. Пермь, ул. Ленина, д. 58
ИНН 5580730215
Чек № 290 Смена № 185
25 янв 2025 09:41
Кофе зерновой 250r
3 x 459,00 1 377,00
Картофель кг
0,796х 49,90 39,72
lTOGO: 1 416,72 руб.
Наличными: 1500,00
Сдача: 83,28
ФН 9961388832716126
ФД 95223 ФП 3791372525"""

NOISY = """000 <<Р0МАШКА>>
ИHH 77O7O83893
KACCOBЫЙ ЧEK
Хлеб пшеничный 1х 45.00 =45.00
ИТОГ0=1 234,50
БЕЗНАЛИЧНЫМИ =1234.50
Карта МИР **** 4321
O5.12.2026 14-32"""

# What the model may read where the rules read otherwise or nothing.
BILL = """THE ROYAL OAK
Table 12
12/05/2026
Seated 18:40
Fish & chips 14.50
Ale 5.20
TOTAL 19.70
Paid at 19:55
AUTH ****5550
CARD PAYMENT 0.00
ACCT ****7781"""

SUPERMARKET_ANSWER: dict[str, Any] = {
    "total": 1416.72,
    "currency": "RUB",
    "date": "2025-01-25",
    "time": "09:41",
    "merchant": "СУПЕРМАРКЕТ ВЕСНА",
    "inn": "5580730215",
    "payment_method": "cash",
    "card_last4": None,
}


def _answer(**changes: Any) -> str:
    return json.dumps({**SUPERMARKET_ANSWER, **changes}, ensure_ascii=False)


def _without_check(result: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in result.items() if name != "answer_check"}


RULES = extractor.extract(SUPERMARKET)


def test_the_rules_alone_read_the_legal_name_and_check_nothing() -> None:
    assert RULES["merchant"] == "ПАО «Сибирский дом»"
    assert RULES["answer_check"] is None
    assert set(RULES) == {*extractor.FIELDS, "confidence", "answer_check"}


def test_a_valid_answer_picking_another_printed_line_is_used() -> None:
    result = extractor.extract(SUPERMARKET, answer=_answer())
    assert result["answer_check"] == "used"
    assert result["merchant"] == "СУПЕРМАРКЕТ ВЕСНА"
    assert result["confidence"]["merchant"] == "language model"
    # Where the model agrees with the rules, the rule stays named.
    assert {k: v for k, v in result.items() if k not in ("merchant", "confidence", "answer_check")} == {
        k: v for k, v in RULES.items() if k not in ("merchant", "confidence", "answer_check")
    }
    assert {k: v for k, v in result["confidence"].items() if k != "merchant"} == {
        k: v for k, v in RULES["confidence"].items() if k != "merchant"
    }


def test_merchant_words_are_matched_whatever_their_case_and_look_alike_letters() -> None:
    rules = extractor.extract(NOISY)
    assert rules["merchant"] == "ООО «Р0МАШКА»"
    answer = {**dict.fromkeys(SUPERMARKET_ANSWER), "merchant": "ООО «Ромашка»"}
    result = extractor.extract(NOISY, answer=json.dumps(answer))
    assert (result["merchant"], result["confidence"]["merchant"]) == ("ООО «Ромашка»", "language model")
    # Words of two lines, or not printed at all, are no name on the receipt.
    for name in ("Ромашка Хлеб", "Ромашка Плюс", "", "  "):
        answer["merchant"] = name
        assert extractor.extract(NOISY, answer=json.dumps(answer))["merchant"] == rules["merchant"]


def test_a_total_the_receipt_does_not_show_is_set_aside_for_the_rules_total() -> None:
    result = extractor.extract(SUPERMARKET, answer=_answer(total=1416.27))
    assert result["answer_check"] == "used"
    assert result["total"] == 1416.72
    assert result["confidence"]["total"] == RULES["confidence"]["total"]
    # A printed amount is the model's to choose; an integer in JSON reads as the amount it is.
    chosen = extractor.extract(SUPERMARKET, answer=_answer(total=1377))
    assert (chosen["total"], chosen["confidence"]["total"]) == (1377.0, "language model")
    assert isinstance(chosen["total"], float)


def test_an_inn_with_wrong_check_digits_or_not_printed_is_set_aside() -> None:
    for inn in ("5580730216", "7707083893", "558073021"):
        result = extractor.extract(SUPERMARKET, answer=_answer(inn=inn))
        assert result["inn"] == "5580730215"
        assert result["confidence"]["inn"] == RULES["confidence"]["inn"]


def test_an_inn_the_rules_missed_is_taken_when_printed_with_valid_check_digits() -> None:
    text = SUPERMARKET.replace("ИНН 5580730215", "Налогоплательщик 5580 730 215")
    assert extractor.extract(text)["inn"] is None
    result = extractor.extract(text, answer=_answer())
    assert (result["inn"], result["confidence"]["inn"]) == ("5580730215", "language model")


def test_fenced_json_with_whitespace_is_read() -> None:
    for answer in (f"```json\n{_answer()}\n```", f"  \n```\n{_answer()}```\n", f"\n\n{_answer()}  "):
        result = extractor.extract(SUPERMARKET, answer=answer)
        assert result["answer_check"] == "used"
        assert result["merchant"] == "СУПЕРМАРКЕТ ВЕСНА"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "not JSON: Expecting value at line 1 column 1"),
        ("The total is 1416.72 RUB.", "not JSON: Expecting value at line 1 column 1"),
        ('{"total": 1416.72,', "not JSON: Expecting property name enclosed in double quotes"),
        ('{"total": NaN}', "not JSON: NaN is not a JSON number"),
        ("[1416.72]", "schema: $: [1416.72] is not of type 'object'"),
        (_answer(total=-1), "schema: $.total: -1 is less than the minimum of 0"),
        (_answer(total="1416.72"), "schema: $.total: '1416.72' is not of type 'number', 'null'"),
        (_answer(currency="rub"), "schema: $.currency: 'rub' does not match '^[A-Z]{3}$'"),
        (_answer(date="25.01.2025"), "schema: $.date: '25.01.2025' does not match"),
        (_answer(time="9:41"), "schema: $.time: '9:41' does not match"),
        (_answer(merchant="x" * 201), "schema: $.merchant: "),
        (_answer(payment_method="sbp"), "schema: $.payment_method: 'sbp' is not one of"),
        (_answer(card_last4="12345"), "schema: $.card_last4: '12345' does not match"),
        (_answer(fiscal={"fn": "9961388832716126"}), "schema: $: Additional properties are not allowed"),
        (
            json.dumps({k: v for k, v in SUPERMARKET_ANSWER.items() if k != "inn"}),
            "schema: $: 'inn' is a required property",
        ),
    ],
)
def test_an_invalid_answer_leaves_the_rules_fields_and_says_why(answer: str, reason: str) -> None:
    result = extractor.extract(SUPERMARKET, answer=answer)
    assert _without_check(result) == _without_check(RULES)
    assert result["answer_check"].startswith(reason), result["answer_check"]
    assert len(result["answer_check"]) <= 200


def test_nulls_keep_the_rules_values() -> None:
    result = extractor.extract(SUPERMARKET, answer=json.dumps(dict.fromkeys(SUPERMARKET_ANSWER)))
    assert result["answer_check"] == "used"
    assert _without_check(result) == _without_check(RULES)


def test_each_field_is_taken_only_where_the_text_shows_it() -> None:
    rules = extractor.extract(BILL)
    assert (rules["currency"], rules["payment_method"], rules["card_last4"]) == (None, None, "5550")
    assert (rules["date"], rules["time"], rules["merchant"]) == ("2026-12-05", "18:40", "THE ROYAL OAK")
    shown = {
        "total": 19.70,
        "currency": None,
        "date": "2026-05-12",  # 12/05/2026 read day first
        "time": "19:55",
        "merchant": "The Royal Oak",
        "inn": None,
        "payment_method": "card",  # named on a line with no amount paid
        "card_last4": "7781",
    }
    result = extractor.extract(BILL, answer=json.dumps(shown))
    assert {name: result[name] for name in shown} == {**shown, "total": 19.70}
    by_the_model = {name for name, why in result["confidence"].items() if why == "language model"}
    assert by_the_model == {"date", "time", "merchant", "payment_method", "card_last4"}
    invented = {
        "total": 19.77,
        "currency": "GBP",
        "date": "2026-05-13",
        "time": "19:56",
        "merchant": "The Crown",
        "inn": "7707083893",
        "payment_method": "cash",
        "card_last4": "7780",
    }
    result = extractor.extract(BILL, answer=json.dumps(invented))
    assert result["answer_check"] == "used"
    assert _without_check(result) == _without_check(rules)


def test_a_currency_is_taken_when_its_code_or_sign_is_printed() -> None:
    answer = json.dumps({**dict.fromkeys(SUPERMARKET_ANSWER), "currency": "EUR"})
    assert extractor.extract(BILL, answer=answer)["currency"] is None
    no_amount_by_it = BILL.replace("Table 12", "Table 12 €")
    assert extractor.extract(no_amount_by_it, answer=answer)["currency"] is None
    dollars = "\nCash back $20.00\nRef $5.00"
    for printed in ("TOTAL 19.70 EUR", "TOTAL €19.70"):
        text = BILL.replace("TOTAL 19.70", printed) + dollars
        assert extractor.extract(text)["currency"] == "USD"
        result = extractor.extract(text, answer=answer)
        assert (result["currency"], result["confidence"]["currency"]) == ("EUR", "language model")
    answer = json.dumps({**dict.fromkeys(SUPERMARKET_ANSWER), "currency": "CHF"})
    result = extractor.extract(BILL.replace("TOTAL 19.70", "TOTAL CHF 19.70"), answer=answer)
    assert (result["currency"], result["confidence"]["currency"]) == ("CHF", "language model")


def test_a_payment_method_other_than_the_rules_is_set_aside() -> None:
    assert RULES["payment_method"] == "cash"
    for method in ("card", "mixed"):
        assert (
            extractor.extract(SUPERMARKET, answer=_answer(payment_method=method))["payment_method"] == "cash"
        )


def test_a_text_that_is_no_receipt_gets_nulls_whatever_the_model_says() -> None:
    text = "Shares rose by $3.50 to $12.25 on Friday, 5 Dec 2026."
    answer = {**dict.fromkeys(SUPERMARKET_ANSWER), "total": 3.5, "currency": "USD", "date": "2026-12-05"}
    result = extractor.extract(text, answer=json.dumps(answer))
    assert _without_check(result) == {**dict.fromkeys(extractor.FIELDS), "confidence": None}
    assert result["answer_check"].startswith("not a receipt: ")


def test_inference_takes_the_answer_per_record() -> None:
    records = [
        {"text": SUPERMARKET, "answer": _answer()},
        {"text": SUPERMARKET},
        {"text": SUPERMARKET, "answer": "?"},
    ]
    results = extractor.inference([{}, {}, {}], records, [], "default")
    assert [r["merchant"] for r in results] == ["СУПЕРМАРКЕТ ВЕСНА", RULES["merchant"], RULES["merchant"]]
    assert [r["answer_check"] for r in results] == ["used", None, results[2]["answer_check"]]
    assert results[2]["answer_check"].startswith("not JSON: ")
    assert results[1] == RULES


def test_the_answer_schema_is_a_valid_schema_of_the_fields_but_fiscal() -> None:
    schema = extractor.ANSWER_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator
    assert list(schema["properties"]) == [name for name in extractor.FIELDS if name != "fiscal"]
    assert schema["required"] == list(schema["properties"])
    jsonschema.validate(SUPERMARKET_ANSWER, schema)


def _documents() -> list[dict[str, Any]]:
    """The documents of the receipt example's two files, the plain pipeline's first."""
    return [
        document
        for path in (PLAIN_MANIFESTS, MANIFESTS)
        for document in load_documents(path.read_text(encoding="utf-8"), source=str(path))
    ]


def test_the_pipeline_constrains_the_model_to_the_answer_schema() -> None:
    [pipeline] = [
        d
        for d in yaml.safe_load_all(MANIFESTS.read_text())
        if d["metadata"]["name"] == "receipt-payments-llm" and d["kind"] == "Pipeline"
    ]
    steps = {step["name"]: step for step in pipeline["spec"]["steps"]}
    read = steps["read"]["parameters"]
    assert read["response_format"]["type"] == "json_schema"
    assert read["response_format"]["json_schema"]["name"] == "receipt"
    assert read["response_format"]["json_schema"]["schema"] == extractor.ANSWER_SCHEMA
    assert (read["temperature"], read["max_tokens"]) == (0, 320)
    assert "JSON" in read["system"] and "null" in read["system"] and "YYYY-MM-DD" in read["system"]


def test_the_manifests_load_with_both_pipelines_and_their_apis() -> None:
    manifests = [parse_document(doc, source=str(MANIFESTS), document=i) for i, doc in enumerate(_documents())]
    pipelines = {m.metadata.name: m for m in manifests if isinstance(m, PipelineManifest)}
    apis = {m.metadata.name: m for m in manifests if isinstance(m, ApiManifest)}
    assert set(pipelines) == {"receipt-payments", "receipt-payments-llm"}
    plain, llm = pipelines["receipt-payments"], pipelines["receipt-payments-llm"]
    assert [(s.name, s.module) for s in llm.spec.steps] == [
        ("ocr", "tesseract-ocr"),
        ("read", "qwen-chat"),
        ("extract", "receipt-extractor"),
    ]
    ocr, read, extract = llm.spec.steps
    assert (ocr.inputs, ocr.parameters) == (plain.spec.steps[0].inputs, plain.spec.steps[0].parameters)
    assert read.inputs == {"prompt": "$.steps.ocr.outputs.text"}
    assert extract.inputs == {"text": "$.steps.ocr.outputs.text", "answer": "$.steps.read.outputs.text"}
    assert llm.spec.outputs == {
        **plain.spec.outputs,
        "answer_check": "$.steps.extract.outputs.answer_check",
        "model_reply": "$.steps.read.outputs.text",
    }
    api = apis["receipt-payments-llm"]
    assert api.spec.pipeline == "receipt-payments-llm"
    assert api.spec.access == apis["receipt-payments"].spec.access
    assert api.spec.rate_limit is not None and api.spec.rate_limit.per_caller == "20/minute"


def _docstring_api(module_dir: str) -> ApiSpec:
    """The API a gallery module's `inference` docstring declares, read without importing the module."""
    tree = ast.parse((MODULE_DIR.parent / module_dir / "inference.py").read_text(encoding="utf-8"))
    [function] = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "inference"
    ]
    docstring = ast.get_docstring(function, clean=False)
    assert docstring is not None
    return parse_docstring(docstring)


def test_the_pipeline_fits_its_modules_apis() -> None:
    [document] = [
        d for d in _documents() if d["metadata"]["name"] == "receipt-payments-llm" and d["kind"] == "Pipeline"
    ]
    manifest = parse_document(document, source=str(MANIFESTS))
    assert isinstance(manifest, PipelineManifest)
    specs = {
        "ocr": _docstring_api("tesseract-ocr"),
        "read": _docstring_api("qwen-chat"),
        "extract": _docstring_api("receipt-extractor"),
    }
    spec, problems = compose(manifest, specs)
    assert problems == []
    assert [f.name for f in spec.inputs] == ["image"]
    assert [f.name for f in spec.outputs][-2:] == ["answer_check", "model_reply"]
