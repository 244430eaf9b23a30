"""Payment details from the text of a receipt, by rules, checking a language model's reading if one is sent.

The text is usually what OCR read from a photo, so the rules expect its mistakes: Latin letters inside
Cyrillic words and back (`CMEHA`, `ТОТАL`), digits for letters in labels (`ИТОГ0`, `lTOGO`), letters for
digits in numbers (`2О26`), spaces inside and around amounts (`1 234,50`, `49, 90`). Labels are found on a
*skeleton* of each line, the line upper-cased with look-alike characters folded together (Cyrillic `Н` and
Latin `H`, `0` and `O`, `l` and `I`), which keeps every character's position, so the value next to a label
is read from the line itself.

Nothing is guessed: a field is null unless a rule found it in the text, and a text that does not look like a
receipt at all (no total, no ИНН or fiscal numbers, no amounts with a payment or a currency) gets nulls
throughout. `confidence` names, for each field found, the rule that found it.

Nothing is guessed with a language model either: the model picks, the text confirms. Its reading of the same
text (`answer`, JSON that `ANSWER_SCHEMA` accepts) may choose among what the text shows where the rules chose
otherwise or found nothing. Each of its values is checked against the text (a total must be one of the
amounts printed, an ИНН must be printed and have valid check digits, a merchant's words must stand on one
line, ...), and a value the text does not show is set aside for the rules' own. The model never decides that
a text is a receipt. The rules need only the standard library; `jsonschema` checks the model's answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import jsonschema  # type: ignore[import-untyped]

FIELDS = ("total", "currency", "date", "time", "merchant", "inn", "payment_method", "card_last4", "fiscal")
LANGUAGES = ("auto", "ru", "en")


def _nullable(kind: str, **rules: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **rules}


ANSWER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "total": _nullable("number", minimum=0),
        "currency": _nullable("string", pattern="^[A-Z]{3}$"),
        "date": _nullable("string", pattern="^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"),
        "time": _nullable("string", pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$"),
        "merchant": _nullable("string", maxLength=200),
        "inn": _nullable("string", pattern="^([0-9]{10}|[0-9]{12})$"),
        "payment_method": {"enum": ["card", "cash", "mixed", None]},
        "card_last4": _nullable("string", pattern="^[0-9]{4}$"),
    },
    "required": [name for name in FIELDS if name != "fiscal"],
    "additionalProperties": False,
}
"""What a language model's `answer` must be: every field of `FIELDS` but `fiscal`, each null where the receipt
does not show it. The `receipt-payments-llm` pipeline constrains the model's reply to it."""


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Extract payment details from the text of a receipt.

    Send the text of a Russian or English receipt, such as what the tesseract-ocr module reads from a photo
    of one; OCR mistakes are expected (ИТОГ0, lTOGO, 1 234,50, =1234.50). Every output is null unless the
    text shows it, and a text that is not a receipt gets nulls throughout. A language model's reading of the
    same text (`answer`) may choose among what the text shows; a value of it that the text does not show is
    set aside for the rules' own.

    :param inputs.text: The receipt's text, one printed line per line
    :type inputs.text: str, max 100000

    :param inputs.answer: A language model's reading of the same receipt: a JSON object (a ```json fence
        around it is fine) with total, currency, date, time, merchant, inn, payment_method and card_last4,
        each null where the receipt does not show it
    :type inputs.answer: str, optional, max 20000

    :param parameters.language: The receipt's language; "auto" tells Russian from English by its letters
    :type parameters.language: str, default "auto", one of ["auto", "ru", "en"]

    :param outputs.total: The amount paid (ИТОГ, К ОПЛАТЕ, TOTAL, AMOUNT DUE): not a subtotal, tax, tip,
        cash handed over or change
    :type outputs.total: float, optional

    :param outputs.currency: ISO 4217 code of the amounts (RUB, USD, EUR, GBP), from a sign or a code on
        the receipt, or RUB for a Russian fiscal receipt (ИНН, ФН, ККТ)
    :type outputs.currency: str, optional

    :param outputs.date: The date of the purchase, as YYYY-MM-DD
    :type outputs.date: str, optional

    :param outputs.time: The time of the purchase, as HH:MM (24 hours)
    :type outputs.time: str, optional

    :param outputs.merchant: The seller: the organisation (ООО «…», ИП …) on a Russian receipt, the
        name at the top of an English one
    :type outputs.merchant: str, optional

    :param outputs.inn: The seller's ИНН (10 or 12 digits), only when its check digits are right
    :type outputs.inn: str, optional

    :param outputs.payment_method: How it was paid: "card", "cash" or "mixed" (both)
    :type outputs.payment_method: str, optional

    :param outputs.card_last4: The last four digits of the card number, from a masked number
        (**** 1234, XXXX1234, *1234)
    :type outputs.card_last4: str, optional

    :param outputs.fiscal: The Russian fiscal numbers shown, as digit strings: fn (ФН), fd (ФД), fp (ФП),
        kkt_reg (РН ККТ), shift (СМЕНА), receipt_number (ЧЕК №)
    :type outputs.fiscal: json, optional

    :param outputs.confidence: For each field found, the rule that found it, or "language model" where the
        model's value was taken
    :type outputs.confidence: json, optional

    :param outputs.answer_check: What became of `answer`: "used" (each of its values the text shows was
        taken), or why it was set aside ("not JSON: ...", "schema: ...", "not a receipt: ...")
    :type outputs.answer_check: str, optional
    """
    return [
        extract(
            record.get("text") or "", language=options.get("language", "auto"), answer=record.get("answer")
        )
        for options, record in zip(parameters, inputs, strict=True)
    ]


def extract(text: str, language: str = "auto", *, answer: str | None = None) -> dict[str, Any]:
    """The payment details of one receipt's text: every field of `FIELDS`, `confidence` and `answer_check`
    (None without an `answer`)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    receipt = _Receipt.read(text, language)
    found: dict[str, tuple[Any, str]] = {}
    for name, rule in _RULES:
        reading = rule(receipt, found)
        if reading is not None:
            found[name] = reading
    check = None
    if not _looks_like_a_receipt(receipt, found):
        found = {}
        if answer is not None:
            check = (
                "not a receipt: the text shows no total, no ИНН or fiscal numbers, "
                "no amounts with a payment or a currency"
            )
    elif answer is not None:
        model, check = read_answer(answer)
        if model is not None:
            found = _confirmed(receipt, found, model)
    result: dict[str, Any] = {name: found[name][0] if name in found else None for name in FIELDS}
    result["confidence"] = {name: why for name, (_, why) in found.items()} or None
    result["answer_check"] = check
    return result


# The text, line by line


@dataclass(frozen=True)
class _Line:
    text: str  # cleaned: one kind of space, quotes made whole, words in one script
    digits: str  # `text` with letters misread for digits inside numbers put back
    skeleton: str  # `text` upper-cased with look-alikes folded, for finding labels

    def amounts(self, start: int = 0) -> list[float]:
        return [_amount(m) for m in _AMOUNT.finditer(self.digits, start)]


@dataclass(frozen=True)
class _Receipt:
    lines: tuple[_Line, ...]
    language: str  # "ru" or "en"

    @classmethod
    def read(cls, text: str, language: str) -> _Receipt:
        raw = [" ".join(line.replace("<<", "«").replace(">>", "»").split()) for line in text.splitlines()]
        raw = [line for line in raw if line]
        if language == "auto":
            language = _guess_language(" ".join(raw))
        lines = []
        for line in raw:
            cleaned = _one_script_per_word(line, language)
            lines.append(_Line(cleaned, _fix_digits(cleaned), _skeleton(cleaned)))
        return cls(tuple(lines), language)

    def search(self, pattern: re.Pattern[str]) -> list[tuple[int, re.Match[str]]]:
        """Every match of `pattern` on the lines' skeletons, with its line's index, top to bottom."""
        return [(i, m) for i, line in enumerate(self.lines) for m in pattern.finditer(line.skeleton)]


_CYRILLIC = re.compile(r"[А-Яа-яЁё]")
_LETTER = re.compile(r"[^\W\d_]")


def _guess_language(text: str) -> str:
    letters = len(_LETTER.findall(text))
    return "ru" if letters and len(_CYRILLIC.findall(text)) / letters >= 0.3 else "en"


# Letters that look alike, or that OCR mistakes for each other (r and г, n and п, u and и).
_LATIN_LOOKS = "AaBEeKkMHOoPpCcTXxyYrnu"
_CYRILLIC_LOOKS = "АаВЕеКкМНОоРрСсТХхуУгпи"
_TO_CYRILLIC = str.maketrans(_LATIN_LOOKS, _CYRILLIC_LOOKS)
_TO_LATIN = str.maketrans(_CYRILLIC_LOOKS, _LATIN_LOOKS)
_WORD = re.compile(r"[^\W\d_]+")


def _one_script_per_word(line: str, language: str) -> str:
    """Words that OCR spelled with letters of both alphabets, rewritten in the alphabet the word is in; words
    of look-alike letters only (P.T., CMEHA, Маг), in the receipt's alphabet."""

    def fix(match: re.Match[str]) -> str:
        word = match.group()
        cyrillic = [bool(_CYRILLIC.match(c)) for c in word]
        if all(cyrillic) or not any(cyrillic):
            if language == ("en" if cyrillic[0] else "ru") and all(
                c in _LATIN_LOOKS + _CYRILLIC_LOOKS for c in word
            ):
                return word.translate(_TO_LATIN if cyrillic[0] else _TO_CYRILLIC)
            return word
        sure_cyrillic = sum(c not in _CYRILLIC_LOOKS for c, cyr in zip(word, cyrillic, strict=True) if cyr)
        sure_latin = sum(c not in _LATIN_LOOKS for c, cyr in zip(word, cyrillic, strict=True) if not cyr)
        to_cyrillic = sure_cyrillic > sure_latin or (sure_cyrillic == sure_latin and language == "ru")
        return word.translate(_TO_CYRILLIC if to_cyrillic else _TO_LATIN)

    return _WORD.sub(fix, line)


_SKELETON = str.maketrans("АВЕЁКМНОРСТХУ", "ABEEKMHOPCTXY")
# A lone 0, 1 or | touching a letter is a letter (ИТОГ0, T0TAL, 1TOGO); l next to capitals is an I (lTOGO).
_LONE_ZERO = re.compile(r"(?<=[^\W\d_])0(?![0-9|])|(?<![0-9|])0(?=[^\W\d_])")
_LONE_ONE = re.compile(
    r"(?<=[^\W\d_])[1|](?![0-9|])|(?<![0-9|])[1|](?=[^\W\d_])|l(?=[A-ZА-ЯЁ])|(?<=[A-ZА-ЯЁ])l"
)


def _skeleton(line: str) -> str:
    line = _LONE_ONE.sub("I", _LONE_ZERO.sub("O", line))
    return "".join(u if len(u := c.upper()) == 1 else c for c in line).translate(_SKELETON)


# A run of digits that OCR may have spelled with look-alike letters, standing apart from any word.
_DIGIT_RUN = re.compile(r"(?<![^\W\d_])[0-9OoОо]*\d[0-9OoОо]*(?![^\W\d_])")
_AS_DIGITS = str.maketrans("OoОо", "0000")


def _fix_digits(line: str) -> str:
    return _DIGIT_RUN.sub(lambda m: m.group().translate(_AS_DIGITS), line)


# An amount with two decimals: 1234.50, 1 234,50, 1,234.50, =1234.50, 49, 90.
_AMOUNT = re.compile(
    r"(?<![\d.,])(?P<whole>\d{1,3}(?:(?P<sep>[ ,.'])\d{3})(?:(?P=sep)\d{3})*|\d+)"
    r" ?(?P<point>[.,]) ?(?P<cents>\d{2})(?!\d)"
)


def _amount(match: re.Match[str]) -> float:
    whole = re.sub(r"\D", "", match.group("whole"))
    return round(int(whole) + int(match.group("cents")) / 100, 2)


def _folded(pattern: str) -> re.Pattern[str]:
    """`pattern`, written with ordinary letters, compiled to match skeletons (its look-alikes folded).

    Character ranges of letters are not folded: spell "any letter" as [^\\W\\d_].
    """
    return re.compile(pattern.translate(_SKELETON))


def _labels(*words: str) -> re.Pattern[str]:
    """A pattern for skeletons: any of `words` standing as words of their own."""
    return _folded(r"(?<![^\W\d_])(?:" + "|".join(words) + r")(?![^\W\d_])")


# The total

_DUE = _labels(r"К\s?ОПЛАТЕ", r"AMOUNT\s?DUE", r"BALANCE\s?DUE", r"TOTA[LI]\s?DUE", r"GRAND\s?TOTA[LI]")
_TOTAL = _labels(r"[ИI]ТО[ГG][^\W\d_]*", r"TOTA[LI]", r"ВСЕГО", r"СУММА\s?ПО\s?ЧЕКУ")
_SUM = _labels(r"AMOUNT", r"СУММА", r"PURCHASE")
_NOT_TOTAL = _folded(
    r"SUB\s?-?\s?TOTA|ПОД\s?[ИI]ТОГ|ПРОМЕЖ|TAX|VAT|НДС|СКИДК|DISCOUNT|SAVING|СДАЧ|CHANGE|CASH|TENDER"
    r"|ПОЛУЧЕНО|ВНЕСЕНО|ITEMS|ПОЗИЦ|(?<![A-Z])TIPS?(?![A-Z])|ЧАЕВ|GRATUITY|POINT|БАЛЛ|БОНУС|BEFORE|QTY"
)


def _total(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[float, str] | None:
    for labels in (_DUE, _TOTAL, _SUM):
        candidates = [
            (amount, line.text[match.start() : match.end()])
            for index, match in receipt.search(labels)
            if not _NOT_TOTAL.search((line := receipt.lines[index]).skeleton)
            and (amount := _amount_after(receipt, index, match.end())) is not None
        ]
        if candidates:
            # The last one: a bill prints its total again after the tip and on the card slip.
            amount, label = candidates[-1]
            return amount, f"amount after {label!r}"
    paid = _paid(receipt)
    return None if paid is None else (paid, "sum of the payments less the change")


# On a total's own line, an amount whose decimal point OCR read as a space or a colon: $21 75, =1027:14.
_LOOSE_AMOUNT = re.compile(r"(?<![\d.,])(?P<whole>\d{1,6})[ :;'`](?P<cents>\d{2})(?!\d)")


def _amount_after(receipt: _Receipt, index: int, start: int) -> float | None:
    """The last amount on the line after `start`, or one standing alone on the next line."""
    line = receipt.lines[index]
    amounts = line.amounts(start) or [_amount(m) for m in _LOOSE_AMOUNT.finditer(line.digits, start)]
    if amounts:
        return amounts[-1]
    if index + 1 < len(receipt.lines):
        following = receipt.lines[index + 1]
        alone = following.amounts()
        if len(alone) == 1 and len(_LETTER.findall(following.text)) <= 3:
            return alone[0]
    return None


_CHANGE = _labels(r"СДАЧА", r"CHANGE(?:\s?DUE)?")


def _paid(receipt: _Receipt) -> float | None:
    """What the payment lines add up to, when the total's own line is missing or unreadable."""
    paid: dict[int, float] = {}
    for pattern in (_CARD, _CASH):
        for index, match in receipt.search(pattern):
            line = receipt.lines[index]
            if not _NOT_A_PAYMENT.search(line.skeleton) and (amounts := line.amounts(match.end())):
                paid[index] = amounts[-1]
    if not any(paid.values()):
        return None
    change = [
        amounts[-1] for i, m in receipt.search(_CHANGE) if (amounts := receipt.lines[i].amounts(m.end()))
    ]
    total = round(sum(paid.values()) - sum(change), 2)
    return total if total > 0 else None


# The currency

_CURRENCY_WORDS = (
    ("RUB", re.compile(r"(?<![^\W\d_])(?:руб|РУБ|Руб|RUB|RUR)(?![^\W\d_])|(?<![^\W\d_])[рР]\.")),
    ("USD", re.compile(r"(?<![A-Za-z])USD(?![A-Za-z])")),
    ("EUR", re.compile(r"(?<![A-Za-z])EUR(?![A-Za-z])")),
    ("GBP", re.compile(r"(?<![A-Za-z])GBP(?![A-Za-z])")),
)
_CURRENCY_SIGNS = {"₽": "RUB", "$": "USD", "€": "EUR", "£": "GBP"}
_RUSSIAN_FISCAL = _labels(r"[ИI]НН", r"ФН", r"ФД", r"ФПД?", r"ККТ", r"КАССОВЫЙ\s?ЧЕК")


def _currency(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    """The code or sign shown most often; a sign counts only next to an amount (OCR makes £ of a 1)."""
    votes = dict.fromkeys([code for code, _ in _CURRENCY_WORDS], 0)
    for line in receipt.lines:
        for code, pattern in _CURRENCY_WORDS:
            votes[code] += len(pattern.findall(line.text))
        for amount in _AMOUNT.finditer(line.digits):
            near = line.digits[max(0, amount.start() - 2) : amount.start()] + line.digits[amount.end() :][:2]
            votes.update({code: votes[code] + 1 for sign, code in _CURRENCY_SIGNS.items() if sign in near})
    code = max(votes, key=lambda c: votes[c])  # the first of equals: ties go to the order above
    if votes[code]:
        return code, "currency sign or code"
    if receipt.language == "ru" and receipt.search(_RUSSIAN_FISCAL):
        return "RUB", "Russian fiscal receipt (ИНН, ФН, ККТ)"
    return None


# The date and time

_ISO_DATE = re.compile(
    r"(?<![\d.,])(?P<y>(?:19|20)\d\d) ?(?P<s>[-./]) ?(?P<m>\d\d?) ?(?P=s) ?(?P<d>\d\d?)(?!\d)"
)
# 05.12.2026 (OCR may make a comma of one dot), 12/05/2026, 12-05-26.
_NUMERIC_DATE = re.compile(
    r"(?<![\d.,/-])(?P<a>\d\d?) ?(?:(?P<s>[-/])|[.,]) ?(?P<b>\d\d?) ?(?(s)(?P=s)|[.,]) ?"
    r"(?P<y>(?:19|20)\d\d|\d\d)(?!\d|[.,]\d)"
)
_MONTHS = (
    (1, r"янв(?:ар[ья])?|jan(?:uary)?"),
    (2, r"фев(?:рал[ья])?|feb(?:ruary)?"),
    (3, r"мар(?:та?)?|mar(?:ch)?"),
    (4, r"апр(?:ел[ья])?|apr(?:il)?"),
    (5, r"ма[йя]|may"),
    (6, r"июн[ья]?|june?"),
    (7, r"июл[ья]?|july?"),
    (8, r"авг(?:уста?)?|aug(?:ust)?"),
    (9, r"сен(?:т(?:ябр[ья])?)?|sep(?:t(?:ember)?)?"),
    (10, r"окт(?:ябр[ья])?|oct(?:ober)?"),
    (11, r"ноя(?:бр[ья])?|nov(?:ember)?"),
    (12, r"дек(?:абр[ья])?|dec(?:ember)?"),
)
_MONTH = "|".join(f"(?:{stems})" for _, stems in _MONTHS)
_DAY_MONTH_DATE = re.compile(
    rf"(?<![\d.,])(?P<d>\d\d?)[ -]?(?P<month>{_MONTH})(?![^\W\d_])\.?[ ,-]*(?P<y>(?:19|20)\d\d)(?!\d)",
    re.IGNORECASE,
)
_MONTH_DAY_DATE = re.compile(
    rf"(?<![^\W\d_])(?P<month>{_MONTH})(?![^\W\d_])\.? ?(?P<d>\d\d?)(?:st|nd|rd|th)?,? ?"
    r"(?P<y>(?:19|20)\d\d)(?!\d)",
    re.IGNORECASE,
)
_DATE_LABEL = _labels(r"ДАТА", r"DATE")
_TIME = re.compile(
    r"(?<![\d:.,])(?P<h>[01]?\d|2[0-3]) ?[:;] ?(?P<m>[0-5]\d)(?: ?[:;] ?[0-5]\d)?(?![\d])"
    r"(?: ?(?P<half>[AaPp])\.? ?[Mm]\b\.?)?"
)
# Right after a date, OCR's other readings of the colon: 07-44, 19°37, 14.32.
_TIME_AFTER_DATE = re.compile(r"^[ ,]{1,3}(?P<h>[01]?\d|2[0-3]) ?[-.:;°º'] ?(?P<m>[0-5]\d)(?![\d.,])")
_HOURS = re.compile(r"\d ?[:;] ?\d\d ?[-–—] ?\d")  # opening hours, 09:00-21:00


@dataclass(frozen=True)
class _Date:
    value: date
    rule: str
    line: int
    end: int
    labelled: bool


def _date(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    chosen = _purchase_date(receipt, found)
    return None if chosen is None else (chosen.value.isoformat(), chosen.rule)


def _purchase_date(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> _Date | None:
    """A date with a label or a time next to it is the purchase's; otherwise the first one printed."""
    dates = _dates(receipt, month_first=_month_first(receipt, found))
    return min(dates, key=lambda d: (not d.labelled, d.line)) if dates else None


def _month_first(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> bool:
    """Whether 12/05/2026 is December 5: on an American receipt (dollars, or English with no currency)."""
    currency = found.get("currency", (None, ""))[0]
    return currency == "USD" or (currency is None and receipt.language == "en")


def _dates(receipt: _Receipt, *, month_first: bool) -> list[_Date]:
    dates = []
    for index, line in enumerate(receipt.lines):
        text, taken = line.digits, list[tuple[int, int]]()
        labelled = bool(_DATE_LABEL.search(line.skeleton)) or bool(_TIME.search(text))
        for pattern, read in _DATE_READERS:
            for match in pattern.finditer(text):
                if any(match.start() < end and start < match.end() for start, end in taken):
                    continue
                day = read(match, month_first)
                if day is not None:
                    taken.append(match.span())
                    dates.append(_Date(day[0], day[1], index, match.end(), labelled))
    return dates


def _read_iso(match: re.Match[str], month_first: bool) -> tuple[date, str] | None:
    return _valid(int(match["y"]), int(match["m"]), int(match["d"]), "year first")


def _read_numeric(match: re.Match[str], month_first: bool) -> tuple[date, str] | None:
    if match["s"] is None and "." not in match.group():
        return None  # 12,05,26 is a list of numbers
    first, second, year = int(match["a"]), int(match["b"]), int(match["y"])
    year += 2000 if year < 100 else 0
    if match["s"] is None or not month_first:
        # Day first, unless that cannot be (05/25/2026).
        return _valid(year, second, first, "day first") or _valid(year, first, second, "month first")
    return _valid(year, first, second, "month first") or _valid(year, second, first, "day first")


def _read_named(match: re.Match[str], month_first: bool) -> tuple[date, str] | None:
    word = match["month"].lower()
    month = next(number for number, stems in _MONTHS if re.fullmatch(stems, word))
    return _valid(int(match["y"]), month, int(match["d"]), "month name")


_DATE_READERS = (
    (_ISO_DATE, _read_iso),
    (_DAY_MONTH_DATE, _read_named),
    (_MONTH_DAY_DATE, _read_named),
    (_NUMERIC_DATE, _read_numeric),
)


def _valid(year: int, month: int, day: int, rule: str) -> tuple[date, str] | None:
    try:
        return date(year, month, day), f"date, {rule}"
    except ValueError:
        return None


def _time(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    chosen = _purchase_date(receipt, found)
    if chosen is not None:
        own = receipt.lines[chosen.line].digits
        match = _TIME.search(own) or _TIME_AFTER_DATE.search(own[chosen.end :])
        if match is not None:
            return _clock(match), "time on the date's line"
        for neighbour in (chosen.line + 1, chosen.line - 1):
            if 0 <= neighbour < len(receipt.lines):
                nearby = receipt.lines[neighbour].digits
                if not _HOURS.search(nearby) and (match := _TIME.search(nearby)) is not None:
                    return _clock(match), "time next to the date"
    for line in receipt.lines:
        if not _HOURS.search(line.digits) and (match := _TIME.search(line.digits)) is not None:
            return _clock(match), "first time printed"
    return None


def _clock(match: re.Match[str]) -> str:
    hour, minute = int(match["h"]), int(match["m"])
    half = (match.groupdict().get("half") or "").upper()
    if half and 1 <= hour <= 12:
        hour = hour % 12 + (12 if half == "P" else 0)
    return f"{hour:02d}:{minute:02d}"


# The merchant

_LEGAL_FORM = _folded(
    r"(?<![^\W_])([О0]{3}|[О0]А[О0]|[З3]А[О0]|ПА[О0]|А[О0]|НА[О0]|ИП|НК[О0]|ФГУП|МУП|ГУП)(?![^\W_])"
)
_NOT_THE_SELLER = _labels(r"ОФД", r"ОПЕРАТОР", r"БАНК", r"ЭКВАЙЕР", r"ПЛАТЕЖН[^\W\d_]*", r"СБЕРБАНК")
_CANONICAL_FORM = str.maketrans("ABEKMHOPCTXY30", "АВЕКМНОРСТХУЗО")
_QUOTED = re.compile(r"[«\"“„']\s*(?P<name>[^«»\"“”„']+?)\s*[»\"”“']")
_NOT_A_NAME = _labels(
    r"RECEIPT",
    r"INVOICE",
    r"ORDER",
    r"COPY",
    r"КАССОВЫЙ",
    r"ТОВАРНЫЙ",
    r"ЧЕК",
    r"ДОБРО",
    r"TEL",
    r"PHONE",
    r"ТЕЛ",
    r"ФАКС",
    r"FAX",
    r"WWW",
    r"HTTPS?",
)
_WEB_ADDRESS = re.compile(r"\.(?:COM|RU|NET|ORG)(?![A-Z])|@")


def _merchant(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    for index, match in receipt.search(_LEGAL_FORM):
        line = receipt.lines[index]
        if _NOT_THE_SELLER.search(line.skeleton):
            continue
        name = _legal_name(line, match)
        if name is not None:
            return name, "organisation's legal form"
    top = _first_prominent_line(receipt)
    return None if top is None else (top, "first line")


def _legal_name(line: _Line, match: re.Match[str]) -> str | None:
    form = match.group(1).translate(_CANONICAL_FORM)
    inn = _INN.search(line.skeleton, match.end())
    rest = line.text[match.end() : inn.start() if inn else None]
    quoted = _QUOTED.search(rest)
    if quoted is not None:
        return f"{form} «{quoted['name']}»"
    name = re.split(r"[,;]", rest)[0].strip(" :«»\"'")
    return f"{form} {name}" if len(_LETTER.findall(name)) >= 2 else None


def _first_prominent_line(receipt: _Receipt) -> str | None:
    """The first line above every amount that reads as a name: not an address, phone, date or header."""
    for line in receipt.lines[:8]:
        if line.amounts() or any(p.search(line.digits) for p, _ in _DATE_READERS):
            return None
        letters = len(_LETTER.findall(line.text))
        if letters < 3 or letters < len(line.text.replace(" ", "")) * 0.6:
            continue
        if line.text[0].isdigit() or _NOT_A_NAME.search(line.skeleton) or _WEB_ADDRESS.search(line.skeleton):
            continue
        name = line.text.strip(" .,:;-_|*~=#!")
        return re.sub(r"^WELCOME\s+TO\s+", "", name, flags=re.IGNORECASE) or None
    return None


# The ИНН and the fiscal numbers

_INN = _labels(r"[ИI]НН")
_INN_NOT_THE_SELLER = _folded(r"КАССИР|ОФД|ОПЕРАТОР|ПОКУПАТЕЛ|КЛИЕНТ")
_INN_WEIGHTS = (
    (2, 4, 10, 3, 5, 9, 4, 6, 8),
    (7, 2, 4, 10, 3, 5, 9, 4, 6, 8),
    (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8),
)
_RUN = re.compile(r"[0-9OoОоlI|ЗзБб]+(?: [0-9OoОоlI|ЗзБб]+)*")
_RUN_DIGITS = str.maketrans("OoОоlI|ЗзБб", "00001113366")
# Between a label and its number: punctuation, №, what OCR makes of № (No, Ne); after ИНН, /КПП.
_VALUE_LEAD = re.compile(r"(?:\s*/\s*[КK]ПП)?[\s:.=#№-]*(?:N[oOoОеe°º]?\.?\s?)?")


def valid_inn(inn: str) -> bool:
    """Whether `inn` is a Russian taxpayer number: 10 digits (organisations) or 12 (individuals), with the
    check digits their weights give."""
    if not inn.isdigit() or len(inn) not in (10, 12):
        return False
    digits = [int(c) for c in inn]
    checks = [_INN_WEIGHTS[0]] if len(inn) == 10 else [_INN_WEIGHTS[1], _INN_WEIGHTS[2]]
    for weights in checks:
        check = sum(w * d for w, d in zip(weights, digits, strict=False)) % 11 % 10
        if check != digits[len(weights)]:
            return False
    return True


def _inn(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    for index, match in receipt.search(_INN):
        line = receipt.lines[index]
        around = line.skeleton[: match.start()] + line.skeleton[match.end() : match.end() + 12]
        if _INN_NOT_THE_SELLER.search(around):
            continue
        for candidate in _number_after(line.text, match.end(), lengths=(10, 12)):
            if valid_inn(candidate):
                return candidate, "after ИНН, check digits valid"
    return None


def _number_after(text: str, start: int, *, lengths: tuple[int, ...]) -> list[str]:
    """The digit strings of an allowed length that the run of digits after `start` can be read as.

    The run may hold letters that OCR mistakes for digits (O, l, I, З, Б) and single spaces; the
    readings are the run up to its first space, then longer ones taking the next group each time.
    """
    lead = _VALUE_LEAD.match(text, start)
    run = _RUN.match(text, lead.end() if lead else start)
    if run is None:
        return []
    groups = run.group().split(" ")
    readings = ["".join(groups[: n + 1]).translate(_RUN_DIGITS) for n in range(len(groups))]
    real_digits = sum(c.isdigit() for c in run.group())
    return [r for r in readings if len(r) in lengths and real_digits >= min(len(r) * 0.6, 6)]


_FISCAL = (
    ("fn", _labels(r"ФН"), (16,)),
    ("fd", _labels(r"ФД"), tuple(range(1, 11))),
    ("fp", _labels(r"ФПД?"), tuple(range(1, 11))),
    ("kkt_reg", _labels(r"(?:РН|РЕГ\.?\s?(?:НОМЕР|№|N)?)\s?ККТ"), tuple(range(10, 21))),
    ("shift", _labels(r"СМЕНА"), tuple(range(1, 6))),
    # OCR often reads Ч as Y or 4.
    ("receipt_number", _labels(r"[ЧY4]ЕК"), tuple(range(1, 9))),
)


def _fiscal(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[dict[str, str], str] | None:
    numbers: dict[str, str] = {}
    for key, label, lengths in _FISCAL:
        for index, match in receipt.search(label):
            readings = _number_after(receipt.lines[index].text, match.end(), lengths=lengths)
            if readings:
                numbers[key] = readings[0]
                break
    return (numbers, "after their labels (ФН, ФД, ФП, РН ККТ, СМЕНА, ЧЕК)") if numbers else None


# How it was paid

_CARD = _labels(
    r"БЕЗНАЛ[^\W\d_]*",
    r"КАРТ(?:А|ОЙ|Ы|У|Е)?",
    r"ЭЛЕКТРОНН[^\W\d_]*",
    r"CARD",
    r"VISA",
    r"MASTER\s?CARD",
    r"MAESTRO",
    r"AMEX",
    r"AMERICAN\s?EXPRESS",
    r"DEBIT",
    r"CREDIT",
    r"CONTACTLESS",
    r"(?:APPLE|GOOGLE|SAMSUNG)\s?PAY",
)
_MIR = _labels(r"МИР")  # the Russian card scheme, also an ordinary word: only next to a card number
_CASH = _folded(r"(?<![^\W\d_])(?<!БЕЗ )(?:НАЛИЧН[^\W\d_]*|CASH)(?![^\W\d_])")
_NOT_A_PAYMENT = _folded(
    r"БОНУС|ЛОЯЛ|ПОКУПАТЕЛ|СКИДОЧ|ПОДАРОЧ|КЛУБ|LOYALTY|REWARD|MEMBER|CLUB|POINTS|GIFT|CASHIER|CASH\s?BACK"
    r"|CASH\s?REG|STORE\s?CREDIT"
)
_MASKED = re.compile(
    r"(?:[*xXхХжЖ#•·]{2,}[\s*xXхХжЖ#•·-]*|(?<![\w*])\* ?)(?P<last4>\d ?\d ?\d ?\d)(?!\d|[.,]\d)"
    r"|(?:ENDING(?: IN)?|LAST 4(?: DIGITS)?)[\s:#]*(?P<ending>\d{4})(?!\d)",
    re.IGNORECASE,
)


def _payment_method(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    card = _paid_with(receipt, _CARD) or any(
        _MASKED.search(receipt.lines[i].digits) for i, _ in receipt.search(_MIR)
    )
    cash = _paid_with(receipt, _CASH)
    if card and cash:
        return "mixed", "card and cash payments"
    if card or cash:
        return ("card", "card payment") if card else ("cash", "cash payment")
    return None


def _paid_with(receipt: _Receipt, pattern: re.Pattern[str]) -> bool:
    """Whether a line names this way of paying and shows no amount, or a non-zero one."""
    for index, match in receipt.search(pattern):
        line = receipt.lines[index]
        if _NOT_A_PAYMENT.search(line.skeleton):
            continue
        amounts = line.amounts(match.end())
        if not amounts or any(amounts):
            return True
    return False


def _card_last4(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> tuple[str, str] | None:
    for line in receipt.lines:
        if _NOT_A_PAYMENT.search(line.skeleton):
            continue
        match = _MASKED.search(line.digits)
        if match is not None:
            return (match["last4"] or match["ending"]).replace(" ", ""), "masked card number"
    return None


# Is it a receipt at all?


def _looks_like_a_receipt(receipt: _Receipt, found: dict[str, tuple[Any, str]]) -> bool:
    if any(name in found for name in ("total", "inn", "fiscal")):
        return True
    amounts = sum(1 for line in receipt.lines if line.amounts())
    return amounts >= 2 and ("payment_method" in found or "currency" in found)


# Currency comes first: the order of 12/05/2026 depends on it.
_RULES = (
    ("currency", _currency),
    ("total", _total),
    ("date", _date),
    ("time", _time),
    ("merchant", _merchant),
    ("inn", _inn),
    ("payment_method", _payment_method),
    ("card_last4", _card_last4),
    ("fiscal", _fiscal),
)


# A language model's answer

_FENCE = re.compile(r"^```(?:json)?[ \t]*\n?(?P<body>.*?)\n?[ \t]*```$", re.DOTALL | re.IGNORECASE)
_ANSWER = jsonschema.Draft202012Validator(ANSWER_SCHEMA)
_MAX_REASON = 200


def read_answer(answer: str) -> tuple[dict[str, Any] | None, str]:
    """A language model's answer as the object `ANSWER_SCHEMA` accepts and "used", or None and why it cannot
    be: "not JSON: ..." or "schema: <where>: <what>" (of the most relevant error)."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced is not None:
        text = fenced["body"].strip()
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return None, f"not JSON: {reason}{where}"
    error = jsonschema.exceptions.best_match(_ANSWER.iter_errors(value))
    if error is not None:
        return None, _shortened(f"schema: {error.json_path}: {error.message}")
    return value, "used"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _shortened(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


_BY_THE_MODEL = "language model"


def _confirmed(
    receipt: _Receipt, found: dict[str, tuple[Any, str]], reading: dict[str, Any]
) -> dict[str, tuple[Any, str]]:
    """The rules' fields, with each value of the model's `reading` that the text shows in place of theirs.
    Where the model agrees with the rules, the rule stays named."""
    merged = dict(found)
    for name, shown in _CONFIRMATIONS:
        value = None if reading[name] is None else shown(receipt, found, reading[name])
        if value is not None and (name not in found or found[name][0] != value):
            merged[name] = value, _BY_THE_MODEL
    return merged


# Each `_shown_*` gives the model's value as the field takes it when the text shows it, else None.


def _shown_total(receipt: _Receipt, found: dict[str, tuple[Any, str]], total: float) -> float | None:
    printed = any(abs(amount - total) < 0.005 for line in receipt.lines for amount in line.amounts())
    return round(float(total), 2) if printed else None


def _shown_currency(receipt: _Receipt, found: dict[str, tuple[Any, str]], code: str) -> str | None:
    """The rules' currency, or one whose code, or sign next to an amount, is printed."""
    if found.get("currency", (None, ""))[0] == code:
        return code
    words = dict(_CURRENCY_WORDS).get(code)
    label = _labels(code)
    signs = "".join(sign for sign, its_code in _CURRENCY_SIGNS.items() if its_code == code)
    for line in receipt.lines:
        if (words.search(line.text) if words is not None else label.search(line.skeleton)) or (
            signs and any(_signed(line, amount, signs) for amount in _AMOUNT.finditer(line.digits))
        ):
            return code
    return None


def _signed(line: _Line, amount: re.Match[str], signs: str) -> bool:
    near = line.digits[max(0, amount.start() - 2) : amount.start()] + line.digits[amount.end() :][:2]
    return any(sign in near for sign in signs)


def _shown_date(receipt: _Receipt, found: dict[str, tuple[Any, str]], day: str) -> str | None:
    """One of the dates printed, read either way where the order of day and month is ambiguous."""
    readings = {d.value.isoformat() for first in (True, False) for d in _dates(receipt, month_first=first)}
    return day if day in readings else None


def _shown_time(receipt: _Receipt, found: dict[str, tuple[Any, str]], clock: str) -> str | None:
    """A clock time printed on a line (not opening hours), or right after a date."""
    for line in receipt.lines:
        if not _HOURS.search(line.digits) and any(_clock(m) == clock for m in _TIME.finditer(line.digits)):
            return clock
    for printed in _dates(receipt, month_first=False):
        after = _TIME_AFTER_DATE.search(receipt.lines[printed.line].digits[printed.end :])
        if after is not None and _clock(after) == clock:
            return clock
    return None


def _shown_merchant(receipt: _Receipt, found: dict[str, tuple[Any, str]], name: str) -> str | None:
    """The name, when every word of it stands on one line (whatever their case and look-alike letters)."""
    words = _name_words(name)
    if len(_LETTER.findall(name)) < 2 or not any(words <= _name_words(line.text) for line in receipt.lines):
        return None
    return " ".join(name.split())


_NAME_WORD = re.compile(r"[^\W_]+")
_AS_LETTERS = str.maketrans("03", "OЗ")  # as in legal forms: 000, 3АО


def _name_words(text: str) -> set[str]:
    return set(_NAME_WORD.findall(_skeleton(text).translate(_AS_LETTERS)))


def _shown_inn(receipt: _Receipt, found: dict[str, tuple[Any, str]], inn: str) -> str | None:
    """An ИНН with valid check digits, printed as one number (its groups may stand apart: 7707 083 893)."""
    if not valid_inn(inn):
        return None
    for line in receipt.lines:
        for run in _RUN.finditer(line.text):
            groups = [group.translate(_RUN_DIGITS) for group in run.group().split(" ")]
            for first in range(len(groups)):
                for last in range(first + 1, len(groups) + 1):
                    if "".join(groups[first:last]) == inn:
                        return inn
    return None


def _shown_payment(receipt: _Receipt, found: dict[str, tuple[Any, str]], method: str) -> str | None:
    """The way of paying, when the rules found none and the text names it (on a line that is no loyalty or
    gift card's); a method other than the rules' own is set aside."""
    if "payment_method" in found:
        return method if found["payment_method"][0] == method else None
    payment_lines = [line for line in receipt.lines if not _NOT_A_PAYMENT.search(line.skeleton)]
    card = any(
        _CARD.search(line.skeleton) or _MIR.search(line.skeleton) or _MASKED.search(line.digits)
        for line in payment_lines
    )
    cash = any(_CASH.search(line.skeleton) for line in payment_lines)
    named = {"card": card, "cash": cash, "mixed": card and cash}
    return method if named[method] else None


def _shown_card(receipt: _Receipt, found: dict[str, tuple[Any, str]], last4: str) -> str | None:
    """The last four digits of a masked card number (not a loyalty or gift card's)."""
    for line in receipt.lines:
        if _NOT_A_PAYMENT.search(line.skeleton):
            continue
        for masked in _MASKED.finditer(line.digits):
            if (masked["last4"] or masked["ending"]).replace(" ", "") == last4:
                return last4
    return None


_Shown = Callable[[_Receipt, dict[str, tuple[Any, str]], Any], Any]
_CONFIRMATIONS: tuple[tuple[str, _Shown], ...] = (
    ("total", _shown_total),
    ("currency", _shown_currency),
    ("date", _shown_date),
    ("time", _shown_time),
    ("merchant", _shown_merchant),
    ("inn", _shown_inn),
    ("payment_method", _shown_payment),
    ("card_last4", _shown_card),
)
