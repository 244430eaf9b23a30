"""Tests of the receipt extractor, calling `inference.py` directly (no server) on receipt texts as OCR reads
them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelport.core.manifests import load_module_manifest
from modelport.sdk import Kind, parse_docstring

MODULE_DIR = Path(__file__).resolve().parents[1]


def _import_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gallery_receipt_extractor", MODULE_DIR / "inference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


extractor = _import_module()
FIELDS = extractor.FIELDS
NOTHING = dict.fromkeys(FIELDS)


# Each receipt: its text, and every field the extractor must answer (those not named must be null).
RECEIPTS: dict[str, tuple[str, dict[str, Any]]] = {
    "russian fiscal receipt": (
        """ООО «РОМАШКА»
г. Москва, ул. Тверская, д. 7
ИНН 7707083893
КАССОВЫЙ ЧЕК
ПРИХОД
Хлеб пшеничный
1 x 45.00 =45.00
Кофе зерновой 250г
2 x 594.75 =1189.50
ИТОГ =1234.50
СУММА НДС 20% =205.75
БЕЗНАЛИЧНЫМИ =1234.50
НАЛИЧНЫМИ =0.00
05.12.26 14:32
СМЕНА 12 ЧЕК 45
РН ККТ: 0001234567012345
ФН: 9960440300123456
ФД: 5199 ФП: 1234567890
САЙТ ФНС: www.nalog.gov.ru""",
        {
            "total": 1234.50,
            "currency": "RUB",
            "date": "2026-12-05",
            "time": "14:32",
            "merchant": "ООО «РОМАШКА»",
            "inn": "7707083893",
            "payment_method": "card",
            "fiscal": {
                "kkt_reg": "0001234567012345",
                "fn": "9960440300123456",
                "fd": "5199",
                "fp": "1234567890",
                "shift": "12",
                "receipt_number": "45",
            },
        },
    ),
    "russian fiscal receipt as noisy OCR": (
        """000 <<Р0МАШКА>>
ИHH 77O7O83893
KACCOBЫЙ ЧEK
Хлеб пшеничный 1х 45.00 =45.00
ИТОГ0=1 234,50
БЕЗНАЛИЧНЫМИ =1234.50
Карта МИР **** 4321
O5.12.2026 14-32
CMEHA № 12 ЧЕК № 45
PH KKT: 0001234567012345
ФН № 9960440300123456
ФД № 5199 ФП 1234567890""",
        {
            "total": 1234.50,
            "currency": "RUB",
            "date": "2026-12-05",
            "time": "14:32",
            "merchant": "ООО «Р0МАШКА»",
            "inn": "7707083893",
            "payment_method": "card",
            "card_last4": "4321",
            "fiscal": {
                "kkt_reg": "0001234567012345",
                "fn": "9960440300123456",
                "fd": "5199",
                "fp": "1234567890",
                "shift": "12",
                "receipt_number": "45",
            },
        },
    ),
    "supermarket paid in cash, OCR read ИТОГО in Latin letters": (
        """СУПЕРМАРКЕТ ВЕСНА
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
ФД 95223 ФП 3791372525""",
        {
            "total": 1416.72,
            "currency": "RUB",
            "date": "2025-01-25",
            "time": "09:41",
            "merchant": "ПАО «Сибирский дом»",
            "inn": "5580730215",
            "payment_method": "cash",
            "fiscal": {
                "fn": "9961388832716126",
                "fd": "95223",
                "fp": "3791372525",
                "shift": "185",
                "receipt_number": "290",
            },
        },
    ),
    "cafe bill of a sole trader with a tip": (
        """Кафе «Вишнёвый сад»
ИП Соколова А.В.
ИНН 553832364000
Стол 5 Официант: Мария
Счёт № 972
Сырники со сметаной x2 760,00
Салат Цезарь x1 490,00
Итого: 1 250,00
Чаевые 10%: 125,00
К оплате: 1 375,00 ₽
Оплата картой МИР **4545
27.11.2026 08:35
ФН: 9961989615278043
ФД: 43339 ФПД: 3075045467""",
        {
            "total": 1375.00,
            "currency": "RUB",
            "date": "2026-11-27",
            "time": "08:35",
            "merchant": "ИП Соколова А.В.",
            "inn": "553832364000",
            "payment_method": "card",
            "card_last4": "4545",
            "fiscal": {"fn": "9961989615278043", "fd": "43339", "fp": "3075045467"},
        },
    ),
    "shop paid partly in cash, partly by card": (
        """МАГАЗИН ЛАДЬЯ
ООО "Городской рынок"
ИНН 6736819304
Дата: 02.03.2025 Время: 18:05
Молоко 3,2% 1л 2 x 89,90 179,80
Сыр Российский 200г 1 x 219,00 219,00
ИТОГО: 398,80
Наличными: 200,00
Оплата картой: 198,80
Карта: 220220******7788""",
        {
            "total": 398.80,
            "currency": "RUB",
            "date": "2025-03-02",
            "time": "18:05",
            "merchant": "ООО «Городской рынок»",
            "inn": "6736819304",
            "payment_method": "mixed",
            "card_last4": "7788",
        },
    ),
    "US store with a card slip": (
        """GREEN LEAF MARKET
2301 Main Ave
Austin, TX 78701
Tel (512) 555-1335
STORE #557
ORANGE JUICE
3 @ 4.99 14.97
SOURDOUGH BREAD 5.49
AA BATTERIES 4PK 7.49
SUBTOTAL 27.95
TAX 8.25% 2.31
TOTAL $30.26
VISA CREDIT $30.26
CARD # XXXXXXXXXXXX0303
AUTH CODE 023746 APPROVED
03/05/2025 07:45 PM
THANK YOU FOR SHOPPING!""",
        {
            "total": 30.26,
            "currency": "USD",
            "date": "2025-03-05",
            "time": "19:45",
            "merchant": "GREEN LEAF MARKET",
            "payment_method": "card",
            "card_last4": "0303",
        },
    ),
    "restaurant bill with a tip, paid in cash, some letters read as Cyrillic": (
        """THE COPPER KETTLE
77 Harbor Road, Portland, ME 04101
Table 15 Server: Marcus
1 Tomato Soup 7.95
1 Club Sandwich 13.95
Subtotal 21.90
Tax 1.75
Tip 4.38
ТОТАL $28.03
Cash $30.00
Change $1.97
Маг 3, 2024 8:03 РМ""",
        {
            "total": 28.03,
            "currency": "USD",
            "date": "2024-03-03",
            "time": "20:03",
            "merchant": "THE COPPER KETTLE",
            "payment_method": "cash",
        },
    ),
    "UK bakery: pounds and the day first": (
        """THE CORNER BAKERY
12 Market Street
York YO1 8AB
VAT No. GB 526 5575 18
05/12/2026 14:01
Croissant x3 £5.55
Carrot Cake x2 £7.50
BALANCE DUE £13.05
VAT 20% INCLUDED £2.18
CONTACTLESS VISA DEBIT £13.05
************4758""",
        {
            "total": 13.05,
            "currency": "GBP",
            "date": "2026-12-05",
            "time": "14:01",
            "merchant": "THE CORNER BAKERY",
            "payment_method": "card",
            "card_last4": "4758",
        },
    ),
    "fuel station: an ISO date, gallons to three decimals": (
        """SUNRISE FUEL
1450 Oak Street
Springfield, IL 62704
PUMP 10 PLUS 89
13.523 GAL @ $3.459/GAL
FUEL SALE $46.78
TOTAL $46.78
MASTERCARD XXXX7290
2026-08-17 19:32:00""",
        {
            "total": 46.78,
            "currency": "USD",
            "date": "2026-08-17",
            "time": "19:32",
            "merchant": "SUNRISE FUEL",
            "payment_method": "card",
            "card_last4": "7290",
        },
    ),
    "euro receipt with a comma for the decimals and a month name": (
        """Welcome to CAFE LUMIERE
Rue de la Paix 4
5 Dec 2026 09:15
2 Espresso 5,00
1 Croissant 2,40
AMOUNT DUE 7,40 EUR
CARD *9912""",
        {
            "total": 7.40,
            "currency": "EUR",
            "date": "2026-12-05",
            "time": "09:15",
            "merchant": "CAFE LUMIERE",
            "payment_method": "card",
            "card_last4": "9912",
        },
    ),
}


@pytest.mark.parametrize("name", list(RECEIPTS))
def test_receipt_fields(name: str) -> None:
    text, expected = RECEIPTS[name]
    result = extractor.extract(text)
    assert {key: result[key] for key in FIELDS} == {**NOTHING, **expected}
    assert set(result["confidence"]) == set(expected)
    assert all(isinstance(rule, str) and rule for rule in result["confidence"].values())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "Dear team,\nthe review moves to 05.12.2026 at 14:30, room 4.\nRegards, Anna",
        "Shares rose by $3.50 to $12.25 on Friday, 5 Dec 2026.",
        "Привет! Встречаемся 05.12.2026 в 14:00 у входа, возьми 500 руб.",
        "lorem ipsum dolor sit amet\n1234567890\n****",
    ],
)
def test_a_text_that_is_no_receipt_gets_nulls(text: str) -> None:
    assert extractor.extract(text) == {**NOTHING, "confidence": None, "answer_check": None}


def test_an_inn_with_wrong_check_digits_is_refused() -> None:
    text, expected = RECEIPTS["russian fiscal receipt"]
    result = extractor.extract(text.replace("ИНН 7707083893", "ИНН 7707083894"))
    assert result["inn"] is None
    assert "inn" not in result["confidence"]
    assert result["total"] == expected["total"]  # the rest is still read


@pytest.mark.parametrize(
    ("inn", "valid"),
    [
        ("7707083893", True),
        ("5580730215", True),
        ("500100732259", True),
        ("553832364000", True),
        ("7707083894", False),
        ("500100732258", False),
        ("500100732269", False),
        ("770708389", False),
        ("77070838931", False),
        ("77O7083893", False),
    ],
)
def test_inn_check_digits(inn: str, valid: bool) -> None:
    assert extractor.valid_inn(inn) is valid


def test_ocr_confusions_are_fixed_only_inside_the_inn_digits() -> None:
    noisy = "ООО «Ромашка»\nИНН: 77O7O8З89З\nИТОГ =10.00"
    assert extractor.extract(noisy)["inn"] == "7707083893"
    # A label followed by a word is not a number.
    assert extractor.extract("ООО «Ромашка»\nИНН ОБОЗНАЧЕН\nИТОГ =10.00")["inn"] is None


def test_inn_printed_with_the_kpp() -> None:
    text = "ООО «Ромашка»\nИНН/КПП 7707083893/770701001\nИТОГ =10.00"
    assert extractor.extract(text)["inn"] == "7707083893"


def test_inn_of_the_cashier_or_the_fiscal_data_operator_is_not_the_sellers() -> None:
    text = "ООО «Ромашка»\nКассир Иванова ИНН 500100732259\nОФД: ООО «Такском» ИНН 7704211201\nИТОГ =10.00"
    result = extractor.extract(text)
    assert result["inn"] is None
    assert result["merchant"] == "ООО «Ромашка»"


@pytest.mark.parametrize(
    ("line", "total"),
    [
        ("ИТОГ =1234.50", 1234.50),
        ("ИТОГ0 =1 234,50", 1234.50),
        ("ИТОГО:1234,50", 1234.50),
        ("lTOGO 1 234.50", 1234.50),
        ("ИТОГ = 49, 90", 49.90),
        ("К ОПЛАТЕ: 12 345,00 руб.", 12345.00),
        ("TOTAL $1,234.56", 1234.56),
        ("T0TAL 7.40", 7.40),
        ("Grand Total: 99.99", 99.99),
        ("BALANCE DUE £21 75", 21.75),
    ],
)
def test_total_line_spellings(line: str, total: float) -> None:
    text = f"Хлеб 1 x 45.00 45.00\nВода 1 x 30.00 30.00\n{line}\nБЕЗНАЛИЧНЫМИ\n"
    assert extractor.extract(text)["total"] == total


def test_subtotal_tax_change_and_cash_tendered_are_not_the_total() -> None:
    text = "SUBTOTAL 40.00\nTAX 3.20\nCASH 50.00\nCHANGE 6.80\nTOTAL 43.20"
    assert extractor.extract(text)["total"] == 43.20
    assert extractor.extract("SUBTOTAL 40.00\nTAX 3.20\nCASH 50.00\nCHANGE 6.80")["total"] == 43.20
    assert extractor.extract("Подытог 100,00\nСкидка 10,00\nИтого 90,00\nСдача 10,00")["total"] == 90.00


@pytest.mark.parametrize(
    ("line", "currency", "date"),
    [
        ("12/05/2026", "USD", "2026-12-05"),
        ("12/05/2026", "GBP", "2026-05-12"),
        ("25/05/2026", "USD", "2026-05-25"),
        ("05.12.2026", "USD", "2026-12-05"),
        ("05.12.26", "RUB", "2026-12-05"),
        ("2026-12-05", "EUR", "2026-12-05"),
        ("5 December 2026", "GBP", "2026-12-05"),
        ("Dec 5th, 2026", "USD", "2026-12-05"),
        ("05 дек 2026", "RUB", "2026-12-05"),
        ("5 декабря 2026 г.", "RUB", "2026-12-05"),
        ("31.02.2026", "RUB", None),
    ],
)
def test_date_formats(line: str, currency: str, date: str | None) -> None:
    sign = {"USD": "$", "GBP": "£", "EUR": "€", "RUB": "руб."}[currency]
    result = extractor.extract(f"Date: {line}\nTOTAL 10.00 {sign}")
    assert result["currency"] == currency
    assert result["date"] == date


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Mastercard **** 1234", "1234"),
        ("Карта: 220220******1234", "1234"),
        ("CARD # XXXXXXXXXXXX1234", "1234"),
        ("VISA *1234", "1234"),
        ("Card ending in 1234", "1234"),
        ("2 x 1234.00", None),
        ("Бонусная карта ****5555", None),
    ],
)
def test_card_last_four_digits(line: str, expected: str | None) -> None:
    assert extractor.extract(f"{line}\nTOTAL 10.00")["card_last4"] == expected


def test_zero_amounts_do_not_count_as_a_payment() -> None:
    text = "ИТОГ =100.00\nНАЛИЧНЫМИ =0.00\nБЕЗНАЛИЧНЫМИ =100.00"
    assert extractor.extract(text)["payment_method"] == "card"
    text = "ИТОГ =100.00\nНАЛИЧНЫМИ =100.00\nБЕЗНАЛИЧНЫМИ =0.00"
    assert extractor.extract(text)["payment_method"] == "cash"
    assert extractor.extract("TOTAL 5.00\nCashier: Mia")["payment_method"] is None


def test_the_language_parameter_decides_the_alphabet_of_look_alike_words() -> None:
    text = "ИП Ахмедов P.T.\nИТОГ =10.00"
    assert extractor.extract(text, language="ru")["merchant"] == "ИП Ахмедов Р.Т."
    assert extractor.extract(text, language="auto")["merchant"] == "ИП Ахмедов Р.Т."
    with pytest.raises(ValueError, match="language"):
        extractor.extract(text, language="de")


def test_inference_answers_each_record_of_a_batch_in_order() -> None:
    names = ["US store with a card slip", "russian fiscal receipt", "cafe bill of a sole trader with a tip"]
    records = [{"text": RECEIPTS[name][0]} for name in names] + [{"text": "no receipt here"}]
    parameters = [{"language": "auto"}, {"language": "ru"}, {}, {"language": "en"}]
    results = extractor.inference(parameters, records, [], "default")
    assert [r["total"] for r in results] == [RECEIPTS[name][1]["total"] for name in names] + [None]
    assert all(set(r) == {*FIELDS, "confidence", "answer_check"} for r in results)
    assert all(r["answer_check"] is None for r in results)
    assert extractor.inference([], [], [], "default") == []


def test_docstring_declares_the_api() -> None:
    spec = parse_docstring(extractor.inference.__doc__)
    assert spec.title == "Extract payment details from the text of a receipt."
    [text, answer] = spec.inputs
    assert (text.name, text.types[0].kind, text.required) == ("text", Kind.STR, True)
    assert (answer.name, answer.types[0].kind, answer.optional) == ("answer", Kind.STR, True)
    [language] = spec.parameters
    assert language.name == "language"
    assert language.default == "auto"
    assert language.choices == ("auto", "ru", "en")
    assert [(f.name, f.types[0].kind, f.optional) for f in spec.outputs] == [
        ("total", Kind.FLOAT, True),
        ("currency", Kind.STR, True),
        ("date", Kind.STR, True),
        ("time", Kind.STR, True),
        ("merchant", Kind.STR, True),
        ("inn", Kind.STR, True),
        ("payment_method", Kind.STR, True),
        ("card_last4", Kind.STR, True),
        ("fiscal", Kind.JSON, True),
        ("confidence", Kind.JSON, True),
        ("answer_check", Kind.STR, True),
    ]


def test_manifest_is_valid_and_its_example_is_a_receipt() -> None:
    manifest = load_module_manifest(MODULE_DIR)
    assert manifest.metadata.name == "receipt-extractor"
    assert manifest.spec.entrypoint == "inference.py:inference"
    assert manifest.spec.requirements == "requirements.txt"
    assert (MODULE_DIR / "requirements.txt").read_text().splitlines()[-1] == "jsonschema>=4.20,<5"
    assert manifest.spec.resources.max_batch_size == 64
    assert manifest.spec.example is not None
    [result] = extractor.inference(
        [manifest.spec.example["parameters"]], [manifest.spec.example["inputs"]], [], "default"
    )
    assert result["total"] == 90.00
    assert result["inn"] == "7707083893"
    assert result["date"] == "2026-12-05"
