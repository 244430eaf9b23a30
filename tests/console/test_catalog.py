"""The console speaks Russian wholly: every message of its templates and code has a Russian translation.

The messages are extracted from the sources as `pybabel extract` does (`modelport/console/babel.cfg`), so a
new string wrapped in `_()` fails this test until `modelport/console/locale/ru/LC_MESSAGES/messages.po`
translates it (`make messages` updates the catalog). A translation must keep the original's `%(name)s`
placeholders.
"""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "modelport" / "console"
CATALOG = CONSOLE / "locale" / "ru" / "LC_MESSAGES" / "messages.po"
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def extracted() -> dict[str, list[str]]:
    """Each message id in the sources (a plural's singular form), with where it is."""
    with (CONSOLE / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)  # type: ignore[no-untyped-call]
    found: dict[str, list[str]] = {}
    for filename, line, message, _, _ in extract_from_dir(ROOT, method_map, options_map):
        singular = message[0] if isinstance(message, tuple) else message
        found.setdefault(singular, []).append(f"{filename}:{line}")
    return found


def test_the_sources_have_messages() -> None:
    messages = extracted()
    assert "Sign in" in messages and "Modules" in messages
    assert len(messages) > 100


def test_every_message_has_a_russian_translation() -> None:
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle, locale="ru")
    missing, fuzzy, wrong = [], [], []
    for message_id, where in extracted().items():
        entry = catalog.get(message_id)
        if entry is None or not entry.string or (isinstance(entry.string, tuple) and not all(entry.string)):
            missing.append(f"{message_id!r} ({where[0]})")
            continue
        if entry.fuzzy:
            fuzzy.append(repr(message_id))
        forms = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        originals = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        wanted = {name for original in originals for name in _PLACEHOLDER.findall(str(original))}
        if any(set(_PLACEHOLDER.findall(str(form))) != wanted for form in forms):
            wrong.append(repr(message_id))
    assert not missing, "untranslated console messages:\n" + "\n".join(missing)
    assert not fuzzy, "fuzzy translations: " + ", ".join(fuzzy)
    assert not wrong, "translations that lose or add placeholders: " + ", ".join(wrong)
