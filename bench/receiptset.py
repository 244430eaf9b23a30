"""A deterministic set of rendered receipts, Russian and English, each with the payment details it shows.

    from receiptset import receipts, field_matches
    for receipt in receipts(40, seed=0):
        receipt.image_bytes, receipt.content_type, receipt.truth

Each receipt is made up (merchant, items, amounts, dates, fiscal numbers) by a seeded random generator and
laid out like a real one: a Russian fiscal (ККТ) receipt, a supermarket list, a café bill with a tip, a fuel
station slip, a US store receipt with its card slip, a UK bakery. It is drawn in one of several fonts on
paper-coloured background, slightly rotated, blurred and noised, and saved as a JPEG (a phone photo cropped to
the receipt) or as a grey PNG (a scan). `truth` holds exactly what the receipt extractor should answer for it
(`FIELDS`): the amount paid, its currency, the date and time, the merchant, the ИНН (with valid check digits),
how it was paid, the card's last four digits and the Russian fiscal numbers, with null for whatever the
receipt does not show. Item lines always add up to the subtotal and the total.

The same `count` and `seed` give the same receipts, byte for byte, on a machine with the same fonts
(`fonts-dejavu-core`, `fonts-liberation2`, `fonts-freefont-ttf`) and Pillow.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["FIELDS", "FONTS", "Receipt", "field_matches", "receipts"]

FIELDS = ("total", "currency", "date", "time", "merchant", "inn", "payment_method", "card_last4", "fiscal")

_FONT_DIR = Path("/usr/share/fonts/truetype")
# (regular, bold): thermal printers print monospaced text; shop software often a proportional sans.
FONTS = (
    ("dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf"),
    ("liberation2/LiberationMono-Regular.ttf", "liberation2/LiberationMono-Bold.ttf"),
    ("freefont/FreeMono.ttf", "freefont/FreeMonoBold.ttf"),
    ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf"),
    ("liberation2/LiberationSans-Regular.ttf", "liberation2/LiberationSans-Bold.ttf"),
    ("freefont/FreeSans.ttf", "freefont/FreeSansBold.ttf"),
    ("dejavu/DejaVuSansCondensed.ttf", "dejavu/DejaVuSansCondensed-Bold.ttf"),
)


@dataclass(frozen=True)
class Receipt:
    """One rendered receipt and what the extractor should find on it."""

    name: str
    language: str
    image_bytes: bytes
    content_type: str
    truth: dict[str, Any]


def receipts(count: int = 40, seed: int = 0) -> list[Receipt]:
    """`count` receipts, alternately Russian and English, cycling through the layouts and fonts."""
    return [_receipt(index, seed) for index in range(count)]


def field_matches(field: str, expected: Any, got: Any) -> bool:
    """Whether the extractor's `got` counts as an exact match of `expected` for `field`.

    Both null is a match, one null is not. `total` compares to the cent; `merchant` compares
    case-insensitively, ignoring quotes, spaces and the diaeresis of ё; `fiscal` compares the objects key by
    key (values are digit strings); every other field compares exactly.
    """
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; expected one of {', '.join(FIELDS)}")
    if expected is None or got is None:
        return expected is None and got is None
    if field == "total":
        try:
            return round(float(expected) * 100) == round(float(got) * 100)
        except (TypeError, ValueError):
            return False
    if field == "merchant":
        return _merchant_key(str(expected)) == _merchant_key(str(got))
    return bool(expected == got)


def _merchant_key(name: str) -> str:
    dropped = str.maketrans("", "", "«»\"'„“”‘’`<> \t")
    return name.casefold().replace("ё", "е").translate(dropped)


# A receipt before rendering


@dataclass(frozen=True)
class _Line:
    left: str = ""
    right: str = ""
    align: str = "left"  # left, center, split (right text at the right margin) or rule (left repeated across)
    scale: float = 1.0
    bold: bool = False


@dataclass
class _Draft:
    lines: list[_Line] = field(default_factory=list)
    truth: dict[str, Any] = field(default_factory=dict)

    def add(self, left: str = "", right: str = "", *, scale: float = 1.0, bold: bool = False) -> None:
        self.lines.append(_Line(left, right, "split" if right else "left", scale, bold))

    def center(self, text: str, *, scale: float = 1.0, bold: bool = False) -> None:
        self.lines.append(_Line(text, "", "center", scale, bold))

    def rule(self, char: str = "-") -> None:
        self.lines.append(_Line(char, "", "rule"))

    def blank(self) -> None:
        self.lines.append(_Line())


@dataclass(frozen=True)
class _Item:
    name: str
    quantity: float  # pieces, or kilograms / litres / gallons when `unit` is set
    price: int  # cents per piece or per unit
    unit: str = ""

    @property
    def amount(self) -> int:
        return round(self.quantity * self.price)


def _receipt(index: int, seed: int) -> Receipt:
    rng = random.Random(f"receiptset:{seed}:{index}")
    language = "ru" if index % 2 == 0 else "en"
    layouts = _RUSSIAN if language == "ru" else _ENGLISH
    name, build = layouts[(index // 2) % len(layouts)]
    draft = _Draft()
    build(draft, rng)
    font = FONTS[(index + seed) % len(FONTS)]
    image_bytes, content_type = _render(draft, font, rng, np.random.default_rng([seed, index]))
    truth = {key: draft.truth.get(key) for key in FIELDS}
    return Receipt(f"{index:03d}-{name}", language, image_bytes, content_type, truth)


# Made-up content

_RU_LEGAL = (
    "ООО «Северный ветер»",
    "ООО «Продторг»",
    "ООО «Ромашка»",
    "АО «Волга-Маркет»",
    "ООО «Лесная поляна»",
    "ООО «Городской рынок»",
    "ПАО «Сибирский дом»",
    "ООО «Берёзка»",
)
_RU_SOLE = ("ИП Соколова А.В.", "ИП Петров И.С.", "ИП Ахмедов Р.Т.", "ИП Кузнецова Е.М.", "ИП Белов Д.А.")
_RU_FUEL = ("ООО «Топливо Восток»", "АО «Нефтесервис»", "ООО «Трасса-Ойл»")
_RU_BRANDS = ("ПРОДУКТЫ У ДОМА", "СУПЕРМАРКЕТ ВЕСНА", "МАГАЗИН ЛАДЬЯ", "ГАСТРОНОМ ЦЕНТРАЛЬНЫЙ")
_RU_CAFES = ("Кафе «Вишнёвый сад»", "Кофейня «Зерно»", "Бистро «Самовар»", "Кафе «Пироги и чай»")
_RU_ADDRESSES = (
    "г. Москва, ул. Лесная, д. 12",
    "г. Казань, пр. Победы, д. 45",
    "г. Самара, ул. Садовая, д. 7",
    "г. Пермь, ул. Ленина, д. 58",
    "г. Тверь, ул. Советская, д. 3",
)
_RU_GROCERIES = (
    ("Хлеб Бородинский", 4590),
    ("Молоко 3,2% 1л", 8990),
    ("Сыр Российский 200г", 21900),
    ("Кофе зерновой 250г", 45900),
    ("Масло сливочное 82,5%", 18990),
    ("Яйцо С1 10шт", 11990),
    ("Гречка 900г", 9490),
    ("Сок апельсиновый 1л", 15990),
    ("Вода минеральная 0,5л", 4990),
    ("Шоколад молочный", 8990),
    ("Пельмени домашние", 32900),
    ("Чай чёрный 100г", 17900),
    ("Кефир 1% 900мл", 7990),
    ("Макароны спагетти", 6990),
)
_RU_WEIGHED = (("Яблоки Гала", 14990), ("Бананы", 12990), ("Огурцы", 19990), ("Картофель", 4990))
_RU_CAFE_MENU = (
    ("Капучино 300мл", 22000),
    ("Латте", 24000),
    ("Круассан", 15000),
    ("Сырники со сметаной", 38000),
    ("Борщ", 42000),
    ("Салат Цезарь", 49000),
    ("Чай чёрный", 18000),
    ("Морс клюквенный", 16000),
    ("Блины с мёдом", 29000),
)
_RU_WAITERS = ("Мария", "Алексей", "Ольга", "Дмитрий")
_RU_FUELS = (("АИ-95", 5420), ("АИ-92", 4990), ("ДТ", 6790))
_RU_MONTHS = ("янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек")

_EN_STORES = (
    "GREEN LEAF MARKET",
    "MAPLE GROCERY",
    "RIVERSIDE HARDWARE",
    "NORTHGATE PHARMACY",
    "FRESH WAY FOODS",
)
_EN_CAFES = ("THE COPPER KETTLE", "HARBOR VIEW CAFE", "BLUE DOOR BISTRO", "SUNNY SIDE DINER")
_EN_FUEL = ("SUNRISE FUEL", "PRAIRIE GAS", "LAKESHORE PETROLEUM")
_EN_UK = ("THE CORNER BAKERY", "HIGH STREET DELI", "KINGS CROSS NEWS")
_EN_ADDRESSES = (
    ("1450 Oak Street", "Springfield, IL 62704"),
    ("77 Harbor Road", "Portland, ME 04101"),
    ("2301 Main Ave", "Austin, TX 78701"),
    ("18 Elm Court", "Madison, WI 53703"),
)
_UK_ADDRESSES = (("12 Market Street", "York YO1 8AB"), ("4 Mill Lane", "Bath BA1 1LT"))
_EN_GROCERIES = (
    ("ORGANIC BANANAS", 129),
    ("WHOLE MILK 1GAL", 429),
    ("SOURDOUGH BREAD", 549),
    ("CHEDDAR CHEESE", 679),
    ("EGGS LARGE 12CT", 389),
    ("COFFEE BEANS 12OZ", 1199),
    ("ORANGE JUICE", 499),
    ("PAPER TOWELS", 899),
    ("GREEK YOGURT", 149),
    ("PASTA SAUCE", 349),
    ("AA BATTERIES 4PK", 749),
    ("DISH SOAP", 299),
)
_EN_CAFE_MENU = (
    ("Cappuccino", 450),
    ("Avocado Toast", 1150),
    ("Blueberry Muffin", 375),
    ("Caesar Salad", 1295),
    ("Iced Tea", 325),
    ("Club Sandwich", 1395),
    ("Tomato Soup", 795),
    ("Pancakes", 995),
)
_UK_MENU = (
    ("Sourdough Loaf", 395),
    ("Croissant", 185),
    ("Sausage Roll", 245),
    ("Flat White", 320),
    ("Carrot Cake", 375),
    ("Newspaper", 250),
)
_EN_SERVERS = ("Anna", "Marcus", "Jenny", "Luis")
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _inn(rng: random.Random, length: int) -> str:
    """A random ИНН with valid check digits (10 digits for organisations, 12 for individuals)."""
    digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(length - 3 if length == 12 else 8)]
    for weights in _INN_WEIGHTS[length]:
        digits.append(sum(w * d for w, d in zip(weights, digits, strict=False)) % 11 % 10)
    return "".join(map(str, digits))


_INN_WEIGHTS = {
    10: ((2, 4, 10, 3, 5, 9, 4, 6, 8),),
    12: ((7, 2, 4, 10, 3, 5, 9, 4, 6, 8), (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)),
}


def _digits(rng: random.Random, length: int, first: str = "") -> str:
    return first + "".join(str(rng.randint(0, 9)) for _ in range(length - len(first)))


def _moment(rng: random.Random) -> datetime:
    start = datetime(2024, 1, 1, 7, 0)
    return start + timedelta(days=rng.randrange(3 * 365), minutes=rng.randrange(15 * 60))


def _pick_items(rng: random.Random, menu: tuple[tuple[str, int], ...], low: int, high: int) -> list[_Item]:
    chosen = rng.sample(menu, rng.randint(low, high))
    return [_Item(name, rng.choice((1, 1, 1, 2, 3)), price) for name, price in chosen]


def _total(items: list[_Item]) -> int:
    return sum(item.amount for item in items)


def _rub(cents: int, style: str) -> str:
    """An amount as a Russian receipt prints it: `kkt` =1234.50, `space` 1 234,50, `plain` 1234,50."""
    whole, kopecks = divmod(cents, 100)
    if style == "kkt":
        return f"={whole}.{kopecks:02d}"
    if style == "space":
        return f"{whole:,}".replace(",", " ") + f",{kopecks:02d}"
    return f"{whole},{kopecks:02d}"


def _usd(cents: int, symbol: str = "") -> str:
    return f"{symbol}{cents / 100:,.2f}"


def _set_common(draft: _Draft, total: int, currency: str | None, moment: datetime, merchant: str) -> None:
    draft.truth.update(
        total=total / 100,
        currency=currency,
        date=moment.strftime("%Y-%m-%d"),
        time=moment.strftime("%H:%M"),
        merchant=merchant,
    )


def _cash_tendered(rng: random.Random, total: int, notes: tuple[int, ...]) -> int:
    note = rng.choice(notes)
    return (total // note + 1) * note


# Russian layouts


def _ru_fiscal(rng: random.Random, keys: tuple[str, ...]) -> dict[str, str]:
    values = {
        "kkt_reg": _digits(rng, 16, "000"),
        "fn": _digits(rng, 16, rng.choice(("9960", "7281", "9961"))),
        "fd": str(rng.randint(1, 99999)),
        "fp": str(rng.randint(1_000_000_000, 4_294_967_295)),
        "shift": str(rng.randint(1, 480)),
        "receipt_number": str(rng.randint(1, 350)),
    }
    return {key: values[key] for key in keys}


def _ru_kkt(draft: _Draft, rng: random.Random) -> None:
    """A fiscal receipt as a Russian cash register (ККТ) prints it."""
    merchant, inn, moment = rng.choice(_RU_LEGAL), _inn(rng, 10), _moment(rng)
    items = _pick_items(rng, _RU_GROCERIES, 3, 6)
    total = _total(items)
    fiscal = _ru_fiscal(rng, ("kkt_reg", "fn", "fd", "fp", "shift", "receipt_number"))
    draft.center(merchant.upper(), bold=True)
    draft.center(rng.choice(_RU_ADDRESSES))
    draft.center(f"ИНН {inn}")
    draft.center("КАССОВЫЙ ЧЕК")
    draft.add("ПРИХОД")
    for item in items:
        draft.add(item.name)
        draft.add(f"   {item.quantity:g} x {item.price / 100:.2f}", _rub(item.amount, "kkt"))
    draft.add("ИТОГ", _rub(total, "kkt"), scale=1.25, bold=True)
    vat = round(total * 20 / 120)
    draft.add("СУММА НДС 20%", _rub(vat, "kkt"))
    method, last4 = rng.choice(("card", "card", "cash")), None
    if method == "card":
        draft.add("БЕЗНАЛИЧНЫМИ", _rub(total, "kkt"))
        draft.add("НАЛИЧНЫМИ", _rub(0, "kkt"))
        if rng.random() < 0.5:
            last4 = _digits(rng, 4)
            draft.add(f"КАРТА {rng.choice(('МИР', 'VISA'))} **** {last4}")
    else:
        paid = _cash_tendered(rng, total, (10000, 50000, 100000))
        draft.add("НАЛИЧНЫМИ", _rub(paid, "kkt"))
        draft.add("СДАЧА", _rub(paid - total, "kkt"))
    draft.add(moment.strftime(rng.choice(("%d.%m.%y %H:%M", "%d.%m.%Y %H:%M"))))
    draft.add(f"СМЕНА {fiscal['shift']}", f"ЧЕК {fiscal['receipt_number']}")
    draft.add(f"РН ККТ: {fiscal['kkt_reg']}")
    draft.add(f"ФН: {fiscal['fn']}")
    draft.add(f"ФД: {fiscal['fd']}", f"ФП: {fiscal['fp']}")
    draft.center("САЙТ ФНС: www.nalog.gov.ru")
    _set_common(draft, total, "RUB", moment, merchant)
    draft.truth.update(inn=inn, payment_method=method, card_last4=last4, fiscal=fiscal)


def _ru_market(draft: _Draft, rng: random.Random) -> None:
    """A supermarket list: the brand, the company, one line per item, cash, card or both."""
    merchant, inn, moment = rng.choice(_RU_LEGAL), _inn(rng, 10), _moment(rng)
    items = _pick_items(rng, _RU_GROCERIES, 4, 7)
    weighed = rng.choice(_RU_WEIGHED)
    items.append(_Item(f"{weighed[0]} кг", rng.randint(300, 2400) / 1000, weighed[1], "кг"))
    total = _total(items)
    fiscal = _ru_fiscal(rng, ("fn", "fd", "fp", "shift", "receipt_number"))
    draft.center(rng.choice(_RU_BRANDS), scale=1.3, bold=True)
    draft.center(merchant)
    draft.center(rng.choice(_RU_ADDRESSES))
    draft.center(f"ИНН {inn}")
    draft.add(f"Чек № {fiscal['receipt_number']}", f"Смена № {fiscal['shift']}")
    if rng.random() < 0.5:
        draft.add(f"Дата: {moment:%d.%m.%Y}", f"Время: {moment:%H:%M}")
    else:
        draft.add(f"{moment.day:02d} {_RU_MONTHS[moment.month - 1]} {moment.year} {moment:%H:%M}")
    draft.rule()
    for item in items:
        draft.add(item.name)
        quantity = f"{item.quantity:.3f}".replace(".", ",") if item.unit else f"{item.quantity:g}"
        draft.add(f"  {quantity} x {_rub(item.price, 'plain')}", _rub(item.amount, "space"))
    draft.rule()
    draft.add("ИТОГО:", _rub(total, "space") + " руб.", scale=1.25, bold=True)
    method, last4 = rng.choice(("card", "cash", "mixed")), None
    if method == "cash":
        paid = _cash_tendered(rng, total, (10000, 50000, 100000))
        draft.add("Наличными:", _rub(paid, "space"))
        draft.add("Сдача:", _rub(paid - total, "space"))
    else:
        cash = rng.randint(1, total // 20000) * 10000 if method == "mixed" and total > 20000 else 0
        method = "mixed" if cash else "card"
        if cash:
            draft.add("Наличными:", _rub(cash, "space"))
        draft.add("Оплата картой:", _rub(total - cash, "space"))
        last4 = _digits(rng, 4)
        draft.add(f"Карта: {_digits(rng, 6, '2202')}******{last4}")
    draft.add(f"ФН {fiscal['fn']}")
    draft.add(f"ФД {fiscal['fd']}", f"ФП {fiscal['fp']}")
    draft.center("Спасибо за покупку!")
    _set_common(draft, total, "RUB", moment, merchant)
    draft.truth.update(inn=inn, payment_method=method, card_last4=last4, fiscal=fiscal)


def _ru_cafe(draft: _Draft, rng: random.Random) -> None:
    """A café bill of a sole trader (12-digit ИНН) with a tip added to the amount paid."""
    merchant, inn, moment = rng.choice(_RU_SOLE), _inn(rng, 12), _moment(rng)
    items = _pick_items(rng, _RU_CAFE_MENU, 2, 5)
    subtotal = _total(items)
    percent = rng.choice((5, 10, 15))
    tip = round(subtotal * percent / 100 / 100) * 100
    total = subtotal + tip
    fiscal = _ru_fiscal(rng, ("fn", "fd", "fp"))
    draft.center(rng.choice(_RU_CAFES), scale=1.3, bold=True)
    draft.center(merchant)
    draft.center(f"ИНН {inn}")
    draft.center(rng.choice(_RU_ADDRESSES))
    draft.add(f"Стол {rng.randint(1, 20)}", f"Официант: {rng.choice(_RU_WAITERS)}")
    draft.add(f"Счёт № {rng.randint(100, 999)}")
    draft.rule("=")
    for item in items:
        draft.add(f"{item.name} x{item.quantity:g}", _rub(item.amount, "space"))
    draft.rule("=")
    draft.add("Итого:", _rub(subtotal, "space"))
    draft.add(f"Чаевые {percent}%:", _rub(tip, "space"))
    draft.add("К оплате:", _rub(total, "space") + " ₽", scale=1.25, bold=True)
    last4 = _digits(rng, 4)
    draft.add(f"Оплата картой {rng.choice(('МИР', 'VISA', 'MASTERCARD'))} **{last4}")
    draft.add(f"{moment:%d.%m.%Y}", f"{moment:%H:%M}")
    draft.add(f"ФН: {fiscal['fn']}")
    draft.add(f"ФД: {fiscal['fd']}", f"ФПД: {fiscal['fp']}")
    draft.center("Спасибо, ждём вас снова!")
    _set_common(draft, total, "RUB", moment, merchant)
    draft.truth.update(inn=inn, payment_method="card", card_last4=last4, fiscal=fiscal)


def _ru_fuel(draft: _Draft, rng: random.Random) -> None:
    """A fuel station receipt: litres of one grade, a bank card, an ISO date."""
    merchant, inn, moment = rng.choice(_RU_FUEL), _inn(rng, 10), _moment(rng)
    grade, price = rng.choice(_RU_FUELS)
    fuel = _Item(grade, rng.randint(1500, 6000) / 100, price, "л")
    total = fuel.amount
    fiscal = _ru_fiscal(rng, ("kkt_reg", "fn", "fd", "fp", "shift", "receipt_number"))
    draft.center(f"АЗС № {rng.randint(1, 99)}", scale=1.3, bold=True)
    draft.center(merchant)
    draft.center(f"ИНН {inn}")
    draft.center("КАССОВЫЙ ЧЕК ПРИХОД")
    draft.add(f"Колонка {rng.randint(1, 8)}", grade)
    draft.add(f"{fuel.quantity:.2f} л x {price / 100:.2f}".replace(".", ","), _rub(total, "kkt"))
    draft.add("ИТОГ", _rub(total, "kkt"), scale=1.25, bold=True)
    draft.add("БЕЗНАЛИЧНЫМИ", _rub(total, "kkt"))
    last4 = _digits(rng, 4)
    draft.add(f"Карта VISA ************{last4}")
    draft.add(f"{moment:%Y-%m-%d %H:%M}")
    draft.add(f"СМЕНА № {fiscal['shift']}", f"ЧЕК № {fiscal['receipt_number']}")
    draft.add(f"РН ККТ {fiscal['kkt_reg']}")
    draft.add(f"ФН № {fiscal['fn']}")
    draft.add(f"ФД № {fiscal['fd']}", f"ФП {fiscal['fp']}")
    _set_common(draft, total, "RUB", moment, merchant)
    draft.truth.update(inn=inn, payment_method="card", card_last4=last4, fiscal=fiscal)


# English layouts


def _en_store(draft: _Draft, rng: random.Random) -> None:
    """A US store receipt with sales tax and a card slip; some print no currency sign at all."""
    merchant, moment = rng.choice(_EN_STORES), _moment(rng)
    street, city = rng.choice(_EN_ADDRESSES)
    items = _pick_items(rng, _EN_GROCERIES, 3, 7)
    subtotal = _total(items)
    tax = round(subtotal * 0.0825)
    total = subtotal + tax
    symbol = rng.choice(("$", "$", ""))
    draft.center(merchant, scale=1.3, bold=True)
    draft.center(street)
    draft.center(city)
    draft.center(f"Tel (217) 555-{rng.randint(1000, 9999)}")
    draft.center(f"STORE #{rng.randint(10, 999)}")
    draft.blank()
    for item in items:
        if item.quantity > 1:
            draft.add(item.name)
            draft.add(f"  {item.quantity:g} @ {_usd(item.price)}", _usd(item.amount))
        else:
            draft.add(item.name, _usd(item.amount))
    draft.add("SUBTOTAL", _usd(subtotal))
    draft.add("TAX 8.25%", _usd(tax))
    draft.add("TOTAL", _usd(total, symbol), scale=1.25, bold=True)
    last4 = _digits(rng, 4)
    brand = rng.choice(("VISA", "MASTERCARD", "AMEX"))
    draft.add(f"{brand} CREDIT", _usd(total, symbol))
    draft.add(f"CARD # XXXXXXXXXXXX{last4}")
    draft.add(f"AUTH CODE {_digits(rng, 6)}", "APPROVED")
    draft.add(moment.strftime(rng.choice(("%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M"))))
    draft.center("THANK YOU FOR SHOPPING!")
    _set_common(draft, total, "USD" if symbol else None, moment, merchant)
    draft.truth.update(payment_method="card", card_last4=last4)


def _en_cafe(draft: _Draft, rng: random.Random) -> None:
    """A restaurant bill with a tip, paid in cash (with change) or by card."""
    merchant, moment = rng.choice(_EN_CAFES), _moment(rng)
    street, city = rng.choice(_EN_ADDRESSES)
    items = _pick_items(rng, _EN_CAFE_MENU, 2, 5)
    subtotal = _total(items)
    tax = round(subtotal * 0.08)
    tip = round(subtotal * rng.choice((15, 18, 20)) / 100)
    total = subtotal + tax + tip
    draft.center(merchant, scale=1.3, bold=True)
    draft.center(f"{street}, {city}")
    draft.add(f"Table {rng.randint(1, 30)}", f"Server: {rng.choice(_EN_SERVERS)}")
    draft.rule()
    for item in items:
        draft.add(f"{item.quantity:g} {item.name}", _usd(item.amount))
    draft.rule()
    draft.add("Subtotal", _usd(subtotal))
    draft.add("Tax", _usd(tax))
    draft.add("Tip", _usd(tip))
    draft.add("Total", _usd(total, "$"), scale=1.25, bold=True)
    method, last4 = rng.choice(("cash", "card")), None
    if method == "cash":
        paid = _cash_tendered(rng, total, (500, 1000, 2000))
        draft.add("Cash", _usd(paid, "$"))
        draft.add("Change", _usd(paid - total, "$"))
    else:
        last4 = _digits(rng, 4)
        draft.add(f"Mastercard **** {last4}", _usd(total, "$"))
    day, month = moment.day, _EN_MONTHS[moment.month - 1]
    if rng.random() < 0.5:
        draft.add(f"{month} {day}, {moment.year}", f"{int(moment.strftime('%I'))}:{moment:%M %p}")
    else:
        draft.add(f"{day} {month} {moment.year}", f"{moment:%H:%M}")
    draft.center("Thank you, come again!")
    _set_common(draft, total, "USD", moment, merchant)
    draft.truth.update(payment_method=method, card_last4=last4)


def _en_fuel(draft: _Draft, rng: random.Random) -> None:
    """A pay-at-the-pump slip: gallons to three decimals, price per gallon, an ISO date."""
    merchant, moment = rng.choice(_EN_FUEL), _moment(rng)
    street, city = rng.choice(_EN_ADDRESSES)
    gallons, price = rng.randint(5000, 18000) / 1000, rng.choice((3299, 3459, 3899))
    total = round(gallons * price / 10)
    draft.center(merchant, scale=1.3, bold=True)
    draft.center(street)
    draft.center(city)
    draft.add(f"PUMP {rng.randint(1, 12):02d}", rng.choice(("UNLEADED 87", "PLUS 89", "PREMIUM 93")))
    draft.add(f"{gallons:.3f} GAL @ ${price / 1000:.3f}/GAL")
    draft.add("FUEL SALE", _usd(total, "$"))
    draft.add("TOTAL", _usd(total, "$"), scale=1.25, bold=True)
    last4 = _digits(rng, 4)
    draft.add("MASTERCARD", f"XXXX{last4}")
    draft.add(f"{moment:%Y-%m-%d}", f"{moment:%H:%M:%S}")
    draft.center("THANK YOU, DRIVE SAFELY")
    _set_common(draft, total, "USD", moment, merchant)
    draft.truth.update(payment_method="card", card_last4=last4)


def _en_uk(draft: _Draft, rng: random.Random) -> None:
    """A UK shop: pounds, VAT, the day before the month, contactless card or cash."""
    merchant, moment = rng.choice(_EN_UK), _moment(rng)
    street, city = rng.choice(_UK_ADDRESSES)
    items = _pick_items(rng, _UK_MENU, 2, 5)
    total = _total(items)
    vat = round(total / 6)
    draft.center(merchant, scale=1.3, bold=True)
    draft.center(street)
    draft.center(city)
    draft.center(f"VAT No. GB {_digits(rng, 3)} {_digits(rng, 4)} {_digits(rng, 2)}")
    draft.add(moment.strftime("%d/%m/%Y"), moment.strftime("%H:%M"))
    draft.rule()
    for item in items:
        draft.add(f"{item.name} x{item.quantity:g}", _usd(item.amount, "£"))
    draft.rule()
    draft.add("BALANCE DUE", _usd(total, "£"), scale=1.25, bold=True)
    draft.add("VAT 20% INCLUDED", _usd(vat, "£"))
    method, last4 = rng.choice(("card", "cash")), None
    if method == "card":
        last4 = _digits(rng, 4)
        draft.add("CONTACTLESS VISA DEBIT", _usd(total, "£"))
        draft.add(f"************{last4}")
    else:
        paid = _cash_tendered(rng, total, (500, 1000, 2000))
        draft.add("CASH", _usd(paid, "£"))
        draft.add("CHANGE", _usd(paid - total, "£"))
    draft.center("Thank you for your custom")
    _set_common(draft, total, "GBP", moment, merchant)
    draft.truth.update(payment_method=method, card_last4=last4)


_Layout = tuple[str, Callable[[_Draft, random.Random], None]]
_RUSSIAN: tuple[_Layout, ...] = (
    ("ru-kkt", _ru_kkt),
    ("ru-market", _ru_market),
    ("ru-cafe", _ru_cafe),
    ("ru-fuel", _ru_fuel),
)
_ENGLISH: tuple[_Layout, ...] = (
    ("en-store", _en_store),
    ("en-cafe", _en_cafe),
    ("en-fuel", _en_fuel),
    ("en-uk", _en_uk),
)


# Rendering


@functools.lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_DIR / path), size)


def _render(
    draft: _Draft, font: tuple[str, str], rng: random.Random, noise: np.random.Generator
) -> tuple[bytes, str]:
    width = rng.randrange(600, 1000, 8)
    margin = round(width * rng.uniform(0.04, 0.07))
    columns = rng.randint(34, 42)
    probe = _font(font[0], 100)
    size = max(14, int(100 * (width - 2 * margin) / probe.getlength("0" * columns)))
    ink = _draw_ink(draft, font, size, width, margin, rng)
    # Most are phone photos (JPEG); some are scans: grey, less grainy, PNG.
    scan = rng.random() < 0.25
    image = _photograph(ink, rng, noise, grain=rng.uniform(1.0, 3.0) if scan else rng.uniform(3.0, 7.0))
    return _encode(image.convert("L"), "PNG", rng) if scan else _encode(image, "JPEG", rng)


def _draw_ink(
    draft: _Draft, font: tuple[str, str], size: int, width: int, margin: int, rng: random.Random
) -> Image.Image:
    """The receipt's text as an ink mask (255 = ink) on a canvas as tall as the lines need."""
    spacing = rng.uniform(1.3, 1.5)
    heights = [round(size * line.scale * spacing) for line in draft.lines]
    height = sum(heights) + 2 * margin
    mask = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(mask)
    right_edge = width - margin
    y = margin
    for line, line_height in zip(draft.lines, heights, strict=True):
        face = _font(font[1] if line.bold else font[0], round(size * line.scale))
        if line.align == "rule":
            count = int((right_edge - margin) / face.getlength(line.left))
            pen.text((margin, y), line.left * count, font=face, fill=255)
        elif line.align == "center":
            while face.getlength(line.left) > right_edge - margin and face.size > 10:
                face = _font(font[1] if line.bold else font[0], face.size - 1)
            x = (width - face.getlength(line.left)) / 2
            pen.text((x, y), line.left, font=face, fill=255)
        else:
            pen.text((margin, y), line.left, font=face, fill=255)
            if line.right:
                pen.text((right_edge - face.getlength(line.right), y), line.right, font=face, fill=255)
        y += line_height
    return mask


def _photograph(
    ink: Image.Image, rng: random.Random, noise: np.random.Generator, grain: float
) -> Image.Image:
    """Thermal print on slightly uneven paper, a little blurred, rotated, with noise of deviation `grain`."""
    ink = ink.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    ink = ink.rotate(rng.uniform(-3.0, 3.0), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    width, height = ink.size
    paper = np.array([rng.uniform(236, 250), rng.uniform(232, 246), rng.uniform(218, 238)], dtype=np.float32)
    shade = noise.normal(0.0, 5.0, size=(8, 4)).astype(np.float32)
    shading = np.asarray(Image.fromarray(shade, mode="F").resize((width, height), Image.Resampling.BICUBIC))
    speckle = noise.standard_normal((height, width), dtype=np.float32)
    speckle *= grain
    speckle += shading
    strength = np.asarray(ink, dtype=np.float32)[:, :, None]
    strength *= rng.uniform(0.8, 0.95) / 255.0
    colour = np.array([rng.uniform(30, 70)] * 2 + [rng.uniform(40, 90)], dtype=np.float32)
    pixels = paper + speckle[:, :, None]  # the background
    pixels += (colour - pixels) * strength
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def _encode(image: Image.Image, kind: str, rng: random.Random) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if kind == "JPEG":
        image.save(buffer, "JPEG", quality=rng.randint(72, 92))
        return buffer.getvalue(), "image/jpeg"
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue(), "image/png"
