"""The identity commands: who the token belongs to, users, groups, API tokens, and the audit trail.

They name users by name and groups by path, and find the ids the API wants in the server's lists. Like the
other platform commands they take `--url` and `--token` and `-o table|json|yaml`; results go to stdout,
messages and errors to stderr. A token's secret is printed once, by `tokens create`; passwords never are.

Exit codes, as for the other platform commands: 0 success; 1 the operation failed (the server refused it or
could not be reached, no user or group has the name given); 2 bad usage or input (not logged in, nothing to
change, a request the server rejected as invalid with 400 or 422).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape

from modelport.cli.platform import (
    Output,
    OutputOption,
    Token,
    Url,
    connect,
    dump,
    err,
    fail,
    print_table,
    read_password,
    when,
)
from modelport.client import AuditEvent, CallerInfo, Client, GroupInfo, Role, TokenInfo, UserInfo
from modelport.core.manifests import check_group_path

__all__ = ["register"]

users_app = typer.Typer(help="List and manage accounts (admins only).", no_args_is_help=True)
groups_app = typer.Typer(help="List and manage groups (admins only).", no_args_is_help=True)
tokens_app = typer.Typer(help="List, make and revoke API tokens.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the identity commands to the `modelport` command line."""
    app.command()(whoami)
    app.command()(audit)
    app.add_typer(users_app, name="users")
    app.add_typer(groups_app, name="groups")
    app.add_typer(tokens_app, name="tokens")


class RoleName(StrEnum):
    user = "user"
    developer = "developer"
    admin = "admin"


UserName = Annotated[str, typer.Argument(help="The user's name.", show_default=False)]
GroupPath = Annotated[str, typer.Argument(help="The group's path, such as /team/users.", show_default=False)]
RoleOption = Annotated[
    RoleName | None, typer.Option("--role", help="user, developer or admin.", show_default=False)
]
GroupsOption = Annotated[
    list[str] | None, typer.Option("--group", help="A group path; may be repeated.", show_default=False)
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]

_USER_COLUMNS = ("NAME", "ROLE", "GROUPS", "SOURCE", "STATUS", "LAST LOGIN")
_GROUP_COLUMNS = ("PATH", "MEMBERS", "CREATED")
_TOKEN_COLUMNS = ("ID", "NAME", "USER", "PREFIX", "KIND", "STATUS", "EXPIRES", "CREATED")
_AUDIT_COLUMNS = ("ID", "AT", "ACTOR", "ACTION", "TARGET", "CLIENT", "DETAILS")


# Who am I


def whoami(output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """Show who the token belongs to: name, role, groups."""
    with connect(url, token) as client:
        caller = client.me()
    _show(caller, output, ("NAME", "ROLE", "GROUPS", "SOURCE"), [_caller_row(caller)])


# Users


@users_app.command("list")
def users_list(output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """List the accounts."""
    with connect(url, token) as client:
        users = client.users()
    _show(users, output, _USER_COLUMNS, map(_user_row, users))


@users_app.command("get")
def users_get(
    name: UserName, output: OutputOption = Output.table, url: Url = None, token: Token = None
) -> None:
    """Show one account."""
    with connect(url, token) as client:
        user = _user(client, name)
    _show(user, output, _USER_COLUMNS, [_user_row(user)])


@users_app.command("create")
def users_create(
    name: UserName,
    role: RoleOption = None,
    groups: GroupsOption = None,
    password_stdin: PasswordStdin = False,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create an account (role user unless given).

    The password is read from stdin with --password-stdin, else asked twice on a terminal; with neither the
    account has no password, and signs in through OIDC or with tokens an admin makes for it.
    """
    _check_paths(groups or [])
    password = read_password() if password_stdin else _new_password()
    with connect(url, token) as client:
        user = client.create_user(
            name, role=Role(role) if role else None, groups=groups or None, password=password
        )
    err.print(f"created user {escape(user.name)}")
    _show(user, output, _USER_COLUMNS, [_user_row(user)])


@users_app.command("update")
def users_update(
    name: UserName,
    role: RoleOption = None,
    groups: GroupsOption = None,
    no_groups: Annotated[bool, typer.Option("--no-groups", help="Take the user out of every group.")] = False,
    password_stdin: PasswordStdin = False,
    disabled: Annotated[
        bool | None,
        typer.Option(
            "--disable/--enable", help="Stop the user signing in, or allow it again.", show_default=False
        ),
    ] = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Change an account's role, groups (--group replaces them all), password, or whether it may sign in."""
    if groups and no_groups:
        fail("--group and --no-groups do not go together", 2)
    new_groups = [] if no_groups else groups or None
    _check_paths(new_groups or [])
    if role is None and new_groups is None and not password_stdin and disabled is None:
        fail(
            "nothing to change: give --role, --group, --no-groups, --password-stdin, --disable or --enable", 2
        )
    password = read_password() if password_stdin else None
    with connect(url, token) as client:
        user_id = _user(client, name).id
        user = client.update_user(
            user_id,
            role=Role(role) if role else None,
            groups=new_groups,
            password=password,
            disabled=disabled,
        )
    err.print(f"updated user {escape(user.name)}")
    _show(user, output, _USER_COLUMNS, [_user_row(user)])


@users_app.command("delete")
def users_delete(name: UserName, url: Url = None, token: Token = None) -> None:
    """Delete an account and revoke its tokens."""
    with connect(url, token) as client:
        client.delete_user(_user(client, name).id)
    err.print(f"deleted user {escape(name)}")


# Groups


@groups_app.command("list")
def groups_list(output: OutputOption = Output.table, url: Url = None, token: Token = None) -> None:
    """List the groups and their members."""
    with connect(url, token) as client:
        groups = client.groups()
    _show(groups, output, _GROUP_COLUMNS, map(_group_row, groups))


@groups_app.command("get")
def groups_get(
    path: GroupPath, output: OutputOption = Output.table, url: Url = None, token: Token = None
) -> None:
    """Show one group and its members."""
    _check_paths([path])
    with connect(url, token) as client:
        group = _group(client, path)
    _show(group, output, _GROUP_COLUMNS, [_group_row(group)])


@groups_app.command("create")
def groups_create(
    path: GroupPath, output: OutputOption = Output.table, url: Url = None, token: Token = None
) -> None:
    """Create a group."""
    _check_paths([path])
    with connect(url, token) as client:
        group = client.create_group(path)
    err.print(f"created group {escape(group.path)}")
    _show(group, output, _GROUP_COLUMNS, [_group_row(group)])


@groups_app.command("delete")
def groups_delete(path: GroupPath, url: Url = None, token: Token = None) -> None:
    """Delete a group."""
    _check_paths([path])
    with connect(url, token) as client:
        client.delete_group(_group(client, path).id)
    err.print(f"deleted group {escape(path)}")


# Tokens


ForUser = Annotated[
    str | None,
    typer.Option("--user", help="Another user's tokens, by name (admins only).", show_default=False),
]


@tokens_app.command("list")
def tokens_list(
    user: ForUser = None, output: OutputOption = Output.table, url: Url = None, token: Token = None
) -> None:
    """List your API tokens and sign-in sessions, or another user's."""
    with connect(url, token) as client:
        tokens = client.tokens(user=_user(client, user).id if user is not None else None)
    now = datetime.now(UTC)
    _show(tokens, output, _TOKEN_COLUMNS, (_token_row(t, now) for t in tokens))


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="What the token is for, such as ci.", show_default=False)],
    expires_days: Annotated[
        int | None,
        typer.Option(
            "--expires-days",
            min=1,
            max=3650,
            help="Days until it expires (default: never).",
            show_default=False,
        ),
    ] = None,
    user: ForUser = None,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Make an API token and print its secret, which is shown only this once."""
    with connect(url, token) as client:
        user_id = _user(client, user).id if user is not None else None
        created = client.create_token(name, expires_in_days=expires_days, user=user_id)
    expires = f"expires {when(created.expires_at)}" if created.expires_at else "never expires"
    err.print(
        f"created token {escape(created.name)} (id {created.id}) for {escape(created.user)}; "
        f"it {expires}. Keep the secret now: it is not shown again."
    )
    if output is Output.table:
        print(created.token)
    else:
        dump(created, output)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id (see `tokens list`).")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Revoke a token at once."""
    with connect(url, token) as client:
        client.revoke_token(token_id)
    err.print(f"revoked token {token_id}")


# Audit


def audit(
    actor: Annotated[str | None, typer.Option(help="Only changes by this user.", show_default=False)] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action, such as user.create.", show_default=False)
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only changes to this, such as user/ann.", show_default=False)
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only changes at or after this ISO 8601 time.", show_default=False)
    ] = None,
    before: Annotated[
        int | None, typer.Option(help="Only events older than this id (to page back).", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many events.")] = 100,
    output: OutputOption = Output.table,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show the audit trail, newest first (admins only)."""
    with connect(url, token) as client:
        events = client.audit(
            actor=actor, action=action, target=target, since=since, before=before, limit=limit
        )
    _show(events, output, _AUDIT_COLUMNS, map(_audit_row, events))


# Names to ids


def _user(client: Client, name: str) -> UserInfo:
    for user in client.users():
        if user.name == name:
            return user
    fail(f"no user named {name}", 1)


def _group(client: Client, path: str) -> GroupInfo:
    for group in client.groups():
        if group.path == path:
            return group
    fail(f"no group {path}", 1)


def _check_paths(paths: list[str]) -> None:
    """Exit 2, before any request, at the first group path the server would refuse, saying what one is."""
    for path in paths:
        try:
            check_group_path(path)
        except ValueError as exc:
            fail(str(exc), 2)


def _new_password() -> str | None:
    """A password asked twice on a terminal; None (no password) when stdin is not one."""
    if not _interactive():
        return None
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return password


def _interactive() -> bool:
    return sys.stdin.isatty()


# Output


def _show(value: object, output: Output, columns: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    if output is not Output.table:
        dump(value, output)
        return
    print_table(columns, rows)


def _listed(values: list[str]) -> str:
    return ", ".join(values) or "-"


def _caller_row(caller: CallerInfo) -> tuple[str, ...]:
    return caller.name, caller.role, _listed(caller.groups), caller.source


def _user_row(user: UserInfo) -> tuple[str, ...]:
    return (
        user.name,
        user.role,
        _listed(user.groups),
        user.source,
        "disabled" if user.disabled else "active",
        when(user.last_login_at) if user.last_login_at else "never",
    )


def _group_row(group: GroupInfo) -> tuple[str, ...]:
    return group.path, _listed(group.members), when(group.created_at)


def _token_row(token: TokenInfo, now: datetime) -> tuple[str, ...]:
    return (
        str(token.id),
        token.name,
        token.user,
        token.prefix,
        token.kind,
        _token_status(token, now),
        when(token.expires_at) if token.expires_at else "never",
        when(token.created_at),
    )


def _token_status(token: TokenInfo, now: datetime) -> str:
    if token.revoked_at:
        return "revoked"
    expires = _instant(token.expires_at)
    return "expired" if expires is not None and expires <= now else "active"


def _instant(stamp: str | None) -> datetime | None:
    """The time a stamp names (UTC when it names no zone), or None when there is none or it cannot be read."""
    try:
        when = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _audit_row(event: AuditEvent) -> tuple[str, ...]:
    details = json.dumps(event.details, ensure_ascii=False, separators=(", ", ": ")) if event.details else ""
    return (
        str(event.id),
        when(event.at),
        event.actor,
        event.action,
        event.target,
        event.client or "-",
        details,
    )
