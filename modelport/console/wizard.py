"""The new-module wizard: a form for a module's name, description and fields, its `inference` docstring
previewed as it is typed, and the `modelport init` skeleton with that API to download as `<name>.tar.gz`.

The form is turned into an `ApiSpec` field by field with the docstring grammar itself (`modelport.sdk.spec`),
so that what the preview shows, and what the download's `inference.py` holds, is exactly what the platform
will parse; the files come from `modelport.artifacts.scaffold`, which `modelport init` renders too, and which
refuses an API whose docstring would not parse back into it. Rows are added and removed by the server (HTMX
swaps the fields; without JavaScript the whole page comes back), so the page needs no script of its own.

Only developers and admins, who may push modules, see the wizard (others get the 403 page, as the API's
module routes answer them). It changes nothing on the platform: the module exists once it is pushed.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import tarfile
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.artifacts.scaffold import NAME_PATTERN, check_api, docstring_source, render_module
from modelport.console.web import Console, Page
from modelport.core.errors import Forbidden
from modelport.core.roles import Role
from modelport.sdk import ApiSpec, FieldSpec, Kind, SpecError, parse_docstring
from modelport.sdk.spec import GROUPS, Group, check_value

__all__ = ["routes"]

MAX_ROWS = 50
"""Fields per group the form takes."""

TYPE_SUGGESTIONS = (
    "str",
    "int",
    "float",
    "bool",
    "json",
    "list[str]",
    "list[int]",
    "list[float]",
    "list[json]",
    "FILE",
    "image/png",
    "image/jpeg",
    "FILE or image/png or image/jpeg",
    "image/*",
    "application/pdf",
    "audio/wav",
    "text/plain",
)
"""What the type box suggests; any type of the docstring grammar is accepted."""

_GROUP_OF: dict[str, Group] = {group: group for group in GROUPS}
_ROW_KEY = re.compile(r"^(inputs|parameters|outputs)-(\d{1,4})-(name|type|optional|default|description)$")
_LIMITS = {"title": 200, "description": 5000, "type": 300, "default": 2000, "row_description": 500}


@dataclass
class Row:
    """One field of the form, as typed."""

    group: Group
    index: int
    name: str = ""
    type: str = ""
    optional: bool = False
    default: str = ""
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.group}-{self.index}"

    @property
    def blank(self) -> bool:
        return not (
            self.name.strip() or self.type.strip() or self.default.strip() or self.description.strip()
        )


@dataclass
class Draft:
    """The whole form, as typed."""

    name: str = ""
    title: str = ""
    description: str = ""
    owner: str = ""
    rows: dict[Group, list[Row]] = field(default_factory=lambda: {g: [] for g in GROUPS})


@dataclass(frozen=True)
class Problem:
    """Why the form cannot become a module: `control` is the id of the input at fault."""

    control: str
    label: str
    message: str


@dataclass(frozen=True)
class Checked:
    """The form checked: the API of the fields that parse (None when even those cannot make a docstring that
    parses back) and every problem found. Only a check without problems may become a module."""

    api: ApiSpec | None
    problems: tuple[Problem, ...]

    @property
    def docstring(self) -> str:
        """The docstring literal as `inference.py` will hold it."""
        return docstring_source(self.api) if self.api is not None else ""

    @property
    def empty(self) -> bool:
        """Whether nothing is declared yet: no text and no field."""
        return self.api is not None and self.api == ApiSpec()

    def of(self, control: str) -> str | None:
        return next((p.message for p in self.problems if p.control == control), None)


def routes(console: Console) -> list[BaseRoute]:
    def new_page(request: Request) -> Response:
        page = console.page(request)
        _require_developer(page)
        draft = Draft(rows={"inputs": [Row("inputs", 0)], "parameters": [], "outputs": [Row("outputs", 0)]})
        return _render_page(console, page, draft, _owner_choices(console, page))

    async def edit_rows(request: Request) -> Response:
        """Without JavaScript: add or remove a row and show the whole page again."""
        page, draft, focus = await _edited(console, request)
        owners = await asyncio.to_thread(_owner_choices, console, page)
        return _render_page(console, page, draft, owners, focus=focus)

    async def fields_fragment(request: Request) -> Response:
        """With HTMX: add or remove a row; the fields again, and the preview out of band."""
        page, draft, focus = await _edited(console, request)
        owners = await asyncio.to_thread(_owner_choices, console, page)
        checked = _check(page, draft, owners, final=False)
        return console.render(
            page,
            "wizard_fields.html",
            draft=draft,
            checked=checked,
            focus=focus,
            shown_problems=False,
            types=TYPE_SUGGESTIONS,
            max_rows=MAX_ROWS,
            oob=True,
        )

    async def preview(request: Request) -> Response:
        page, form = await console.form(request)
        _require_developer(page)
        draft = _draft(form)
        owners = await asyncio.to_thread(_owner_choices, console, page)
        checked = _check(page, draft, owners, final=False)
        return console.render(page, "wizard_preview.html", draft=draft, checked=checked)

    async def download(request: Request) -> Response:
        page, form = await console.form(request)
        _require_developer(page)
        draft = _draft(form)
        owners = await asyncio.to_thread(_owner_choices, console, page)
        checked = _check(page, draft, owners, final=True)
        if checked.api is None or checked.problems:
            return _render_page(console, page, draft, owners, final=True, status=400)
        name = draft.name.strip()
        files = render_module(name, api=checked.api, owner=draft.owner or None)
        return Response(
            _tarball(name, files),
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{name}.tar.gz"',
                "Cache-Control": "no-store",
            },
        )

    return [
        Route("/new", new_page, methods=["GET"], name="wizard"),
        Route("/new", edit_rows, methods=["POST"], name="wizard-rows"),
        Route("/new/fields", fields_fragment, methods=["POST"], name="wizard-fields"),
        Route("/new/preview", preview, methods=["POST"], name="wizard-preview"),
        Route("/new/download", download, methods=["POST"], name="wizard-download"),
    ]


def _require_developer(page: Page) -> None:
    """The API's rule for managing modules: developers and admins only (403 otherwise)."""
    if page.principal.role not in (Role.ADMIN, Role.DEVELOPER):
        raise Forbidden("creating modules needs the developer or admin role")


async def _edited(console: Console, request: Request) -> tuple[Page, Draft, str | None]:
    """The posted form with its `add` (a group) or `remove` (a row's key) applied, and what to focus after."""
    page, form = await console.form(request)
    _require_developer(page)
    draft = _draft(form)
    added = _GROUP_OF.get(str(form.get("add") or ""))
    removed = str(form.get("remove") or "")
    if added is not None:
        rows = draft.rows[added]
        if len(rows) < MAX_ROWS:
            rows.append(Row(added, max((r.index for r in rows), default=-1) + 1))
            return page, draft, f"{rows[-1].key}-name"
        return page, draft, f"add-{added}"
    group = _GROUP_OF.get(removed.partition("-")[0])
    if group is not None:
        draft.rows[group] = [r for r in draft.rows[group] if r.key != removed]
        return page, draft, f"add-{group}"
    return page, draft, None


def _render_page(
    console: Console,
    page: Page,
    draft: Draft,
    owners: tuple[str, ...],
    *,
    focus: str | None = None,
    final: bool = False,
    status: int = 200,
) -> Response:
    """The whole page; `final` (a refused download) marks each field at fault where it stands."""
    if not draft.owner and len(owners) == 1 and page.principal.role == Role.DEVELOPER:
        draft.owner = owners[0]
    checked = _check(page, draft, owners, final=final)
    return console.render(
        page,
        "wizard.html",
        status=status,
        draft=draft,
        checked=checked,
        focus=focus,
        shown_problems=final,
        owners=owners,
        admin=page.principal.role == Role.ADMIN,
        types=TYPE_SUGGESTIONS,
        max_rows=MAX_ROWS,
        oob=False,
    )


def _owner_choices(console: Console, page: Page) -> tuple[str, ...]:
    """The groups the module may be given to, as the push will allow: an admin any, a developer its own."""
    if page.principal.role == Role.ADMIN:
        return tuple(group.path for group in console.services.identity.groups())
    return tuple(sorted(page.principal.groups))


# Reading the form


def _draft(form: Mapping[str, Any]) -> Draft:
    draft = Draft(
        name=_text(form.get("name")),
        title=_text(form.get("title")),
        description=_text(form.get("description")),
        owner=_text(form.get("owner")),
    )
    rows: dict[tuple[Group, int], Row] = {}
    for key in form:
        match = _ROW_KEY.match(key)
        if match is None:
            continue
        group, index, part = _GROUP_OF[match.group(1)], int(match.group(2)), match.group(3)
        row = rows.setdefault((group, index), Row(group, index))
        if part == "optional":
            row.optional = bool(form.get(key))
        else:
            setattr(row, part, _text(form.get(key)))
    for (group, _), row in sorted(rows.items()):
        if len(draft.rows[group]) < MAX_ROWS:
            draft.rows[group].append(row)
    return draft


def _text(value: Any) -> str:
    """A form value as text, without the control characters a docstring cannot hold (line breaks stay)."""
    text = value if isinstance(value, str) else ""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs"))


def _line(text: str) -> str:
    """Text on one line: runs of white space (line breaks included) become one space."""
    return " ".join(text.split())


# Checking it


def _check(page: Page, draft: Draft, owners: tuple[str, ...], *, final: bool) -> Checked:
    """The draft as an `ApiSpec`, and its problems. `final`: as the download checks it (a name is needed)."""
    problems: list[Problem] = []
    gettext = page.gettext
    name = draft.name.strip()
    if name and not NAME_PATTERN.fullmatch(name):
        problems.append(
            Problem(
                "name",
                gettext("Name"),
                gettext(
                    "Use 1 to 63 lowercase letters, digits and hyphens, starting and ending with a letter or "
                    "digit (for example receipt-ocr)."
                ),
            )
        )
    elif not name and final:
        problems.append(Problem("name", gettext("Name"), gettext("Give the module a name.")))
    problems.extend(_owner_problems(page, draft, owners, final=final))
    title, description, text_problems = _free_text(page, draft)
    problems.extend(text_problems)
    fields: dict[Group, list[FieldSpec]] = {g: [] for g in GROUPS}
    for group in GROUPS:
        seen: set[str] = set()
        for position, row in enumerate(draft.rows[group], start=1):
            if row.blank:
                continue
            built, row_problems = _field(page, row, position)
            problems.extend(row_problems)
            if built is None:
                continue
            if built.name in seen:
                label = _row_label(page, row, position)
                problems.append(Problem(f"{row.key}-name", label, gettext("This name is declared twice.")))
                continue
            seen.add(built.name)
            fields[group].append(built)
    api = ApiSpec(
        title=title,
        description=description,
        inputs=tuple(fields["inputs"]),
        parameters=tuple(fields["parameters"]),
        outputs=tuple(fields["outputs"]),
    )
    try:
        check_api(api)
    except ValueError as exc:
        problems.append(Problem("description", gettext("Description"), str(exc)))
        return Checked(None, tuple(problems))
    return Checked(api, tuple(problems))


def _owner_problems(page: Page, draft: Draft, owners: tuple[str, ...], *, final: bool) -> list[Problem]:
    gettext = page.gettext
    label = gettext("Owner group")
    if draft.owner and draft.owner not in owners:
        return [Problem("owner", label, gettext("Choose one of the groups offered."))]
    if page.principal.role == Role.DEVELOPER and not owners:
        message = gettext("You are in no group, so you cannot push a module: ask an admin to add you to one.")
        return [Problem("owner", label, message)]
    if page.principal.role == Role.DEVELOPER and not draft.owner and len(owners) > 1 and final:
        return [Problem("owner", label, gettext("Choose the group whose developers will manage the module."))]
    return []


def _free_text(page: Page, draft: Draft) -> tuple[str, str, list[Problem]]:
    """The title and description as the grammar reads them back (lines stripped, blank runs collapsed)."""
    problems = []
    title = _line(draft.title)
    if len(title) > _LIMITS["title"]:
        problems.append(_too_long(page, "title", page.gettext("Title"), _LIMITS["title"]))
    if len(draft.description) > _LIMITS["description"]:
        problems.append(_too_long(page, "description", page.gettext("Description"), _LIMITS["description"]))
    lines = [line.strip() for line in draft.description.expandtabs().splitlines()]
    message = page.gettext("A line may not start with “:”: the docstring would read it as a field.")
    if title.startswith(":"):
        problems.append(Problem("title", page.gettext("Title"), message))
    if any(line.startswith(":") for line in lines):
        problems.append(Problem("description", page.gettext("Description"), message))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join([title, "", *lines]).strip())
    return (text.split("\n", 1)[0].strip() if text else ""), text, problems


def _too_long(page: Page, control: str, label: str, limit: int) -> Problem:
    return Problem(control, label, page.gettext("Keep it under %(limit)s characters.", limit=limit))


def _row_label(page: Page, row: Row, position: int) -> str:
    group = {
        "inputs": page.gettext("Input %(n)s", n=position),
        "parameters": page.gettext("Parameter %(n)s", n=position),
        "outputs": page.gettext("Output %(n)s", n=position),
    }[row.group]
    return f"{group} ({_line(row.name)})" if row.name.strip() else group


def _field(page: Page, row: Row, position: int) -> tuple[FieldSpec | None, list[Problem]]:
    """One row as a `FieldSpec`, read by the grammar from the lines it becomes in the docstring."""
    label = _row_label(page, row, position)
    name = row.name.strip()
    if not name:
        return None, [Problem(f"{row.key}-name", label, page.gettext("Give the field a name."))]
    for part, limit in (
        ("type", _LIMITS["type"]),
        ("default", _LIMITS["default"]),
        ("description", _LIMITS["row_description"]),
    ):
        if len(getattr(row, part)) > limit:
            return None, [_too_long(page, f"{row.key}-{part}", label, limit)]
    described = _parse_field(row.group, name, _line(row.description), "str")
    if isinstance(described, str) or described.name != name:
        message = page.gettext(
            "Use letters, digits and _, not starting with a digit (for example image_url)."
        )
        return None, [Problem(f"{row.key}-name", label, message)]
    modifiers = [_line(row.type) or "str", *(["optional"] if row.optional else [])]
    typed = _parse_field(row.group, name, _line(row.description), ", ".join(modifiers))
    if isinstance(typed, str):
        return None, [Problem(f"{row.key}-type", label, typed)]
    if not row.default.strip():
        return typed, []
    value = _default_value(typed, row.default)
    if value is _NOT_JSON:
        message = page.gettext('Write the default as JSON, for example 3, true, "eng" or [1, 2].')
        return None, [Problem(f"{row.key}-default", label, message)]
    defaulted = _parse_field(
        row.group, name, _line(row.description), ", ".join([*modifiers, f"default {json.dumps(value)}"])
    )
    if isinstance(defaulted, str):
        return None, [Problem(f"{row.key}-default", label, defaulted)]
    return defaulted, []


def _parse_field(group: Group, name: str, description: str, type_text: str) -> FieldSpec | str:
    """The field the grammar reads from its two docstring lines, or the grammar's message."""
    try:
        spec = parse_docstring(f":param {group}.{name}: {description}\n:type {group}.{name}: {type_text}")
    except SpecError as exc:
        return exc.message
    found = spec.group(group)
    if len(found) != 1 or spec.description or any(spec.group(g) for g in GROUPS if g != group):
        return f"`{name}` is not a valid field name"
    return found[0]


_NOT_JSON: Any = object()


def _default_value(spec: FieldSpec, text: str) -> Any:
    """A default typed in the form: JSON, or, for a field that takes text, the text itself (`eng`: "eng")."""
    stripped = text.strip()
    try:
        value = json.loads(stripped, parse_constant=_no_constant)
    except ValueError:
        value = _NOT_JSON
    if isinstance(value, float) and not math.isfinite(value):
        value = _NOT_JSON
    takes_text = any(t.kind is Kind.STR for t in spec.types)
    if value is None or (value is not _NOT_JSON and (not takes_text or check_value(spec, value) is None)):
        return value
    return _line(text) if takes_text else _NOT_JSON


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The download


def _tarball(name: str, files: Mapping[PurePosixPath, str]) -> bytes:
    """The module's files under `<name>/`, as a `tar.gz`."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folders = sorted({str(parent) for path in files for parent in path.parents if str(parent) != "."})
        for folder in ["", *folders]:
            info = tarfile.TarInfo(f"{name}/{folder}".rstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            archive.addfile(info)
        for path, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, now
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
