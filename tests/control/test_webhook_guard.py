"""Where webhooks may go: public unicast addresses only, whatever spelling or name leads elsewhere, unless
the settings open a network. Names are resolved by an injected resolver: no real DNS here."""

from __future__ import annotations

import socket
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from modelport.control.webhooks import Webhooks
from modelport.core.errors import WebhookRefused
from modelport.core.settings import Settings
from modelport.db import Database

PUBLIC = "93.184.216.34"

NAMES = {
    "example.com": [PUBLIC],
    "dual.example.com": [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"],
    "intranet.example.com": ["10.0.0.7"],
    "metadata.example.com": ["169.254.169.254"],
    "half.example.com": [PUBLIC, "192.168.1.1"],  # one bad address is enough
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "ula.example.com": ["fd00:ec2::254"],
    "local.example.com": ["127.0.0.1"],
}


def resolver(names: dict[str, list[str]]) -> Callable[..., list[tuple[Any, ...]]]:
    """A `getaddrinfo` answering from `names`, recording each name asked."""

    def resolve(host: str, port: int, family: int = 0, kind: int = 0) -> list[tuple[Any, ...]]:
        resolve.asked.append(host)  # type: ignore[attr-defined]
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        found = []
        for address in names[host]:
            if ip_address(address).version == 6:
                found.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                found.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return found

    resolve.asked = []  # type: ignore[attr-defined]
    return resolve


@pytest.fixture
def guard(tmp_path: Path) -> Webhooks:
    database = Database(f"sqlite:///{tmp_path / 'unused.db'}")  # the guard never opens it
    return Webhooks(database, settings=Settings(data_dir=tmp_path), resolve=resolver(NAMES))


REFUSED_LITERALS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "IPv6 form of a loopback"),
    ("http://[::ffff:7f00:1]:8080/", "IPv6 form of a loopback"),
    ("http://[::127.0.0.1]/", "IPv6 form of a loopback"),
    ("http://[64:ff9b::7f00:1]/", "IPv6 form of a loopback"),
    ("http://[2002:7f00:1::]/", "IPv6 form of a loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0xa9fea9fe/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "IPv6 form of a link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00:ec2::254]/", "unique local"),
    ("http://10.1.2.3/", "private"),
    ("http://012.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://100.64.0.1/", "shared"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("https://192.0.2.1/", "documentation"),
]


@pytest.mark.parametrize(("url", "kind"), REFUSED_LITERALS)
def test_addresses_that_are_not_public_are_refused_in_every_spelling(
    guard: Webhooks, url: str, kind: str
) -> None:
    with pytest.raises(WebhookRefused, match=f"is an? {kind}"):
        guard.check(url)
    assert guard.resolve.asked == []  # type: ignore[attr-defined]  # a literal is never looked up


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("intranet.example.com", "private"),
        ("metadata.example.com", "link-local"),
        ("half.example.com", "private"),
        ("mapped.example.com", "IPv6 form of a loopback"),
        ("ula.example.com", "unique local"),
        ("local.example.com", "loopback"),
    ],
)
def test_names_that_resolve_to_addresses_that_are_not_public_are_refused(
    guard: Webhooks, host: str, kind: str
) -> None:
    with pytest.raises(WebhookRefused, match=f"resolves to an? {kind}") as refused:
        guard.check(f"https://{host}/hook")
    # The caller learns what they gave and the kind of address, never the address the name has.
    assert host in refused.value.message
    assert not any(address in refused.value.message for address in NAMES[host])


def test_public_addresses_pass_and_deliveries_connect_to_the_checked_address(guard: Webhooks) -> None:
    target = guard.target("https://Example.com/hooks/jobs?team=a")
    assert target.addresses == (ip_address(PUBLIC),)
    assert str(target.connect_url()) == f"https://{PUBLIC}/hooks/jobs?team=a"
    assert (target.host, target.authority) == ("example.com", "example.com")
    dual = guard.target("http://dual.example.com:8080/")
    assert [str(a) for a in dual.addresses] == NAMES["dual.example.com"]
    assert dual.authority == "dual.example.com:8080"
    assert str(dual.connect_url()) == f"http://{PUBLIC}:8080/"
    for url in (
        f"http://{PUBLIC}/",
        "http://0x5db8d822/",
        "http://[2606:4700::1111]/",
        f"http://[::ffff:{PUBLIC}]/",
    ):
        guard.check(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://example.com/", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http://user:password@example.com/", "credentials"),
        ("http://token@example.com/", "credentials"),
        ("http://example.com\\@127.0.0.1/", "backslashes"),
        ("http://exa mple.com/", "without spaces"),
        ("http://exämple.com/", "punycode"),
        ("http:///hook", "no valid host"),
        ("http://[::1]x/", "no valid host"),
        ("http://[::1/", "not a valid URL"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://example.com:0/", "port"),
        ("http://example.com:70000/", "port"),
        ("http://1.2.3.4.5/", "not a valid IPv4"),
        ("http://0x100000000/", "not a valid IPv4"),
        ("http://08.1.2.3/", "not a valid IPv4"),
        ("http://exa_mple-.com/", "not a valid host name"),
        ("http://nowhere.example.com/", "cannot be resolved"),
        (f"https://example.com/{'a' * 2048}", "longer than 2048"),
    ],
)
def test_urls_that_are_not_plain_http_are_refused(guard: Webhooks, url: str, why: str) -> None:
    with pytest.raises(WebhookRefused, match=why):
        guard.check(url)


def test_an_allowed_network_opens_exactly_that_network(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_allowed_networks=["127.0.0.0/8"])
    database = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    guard = Webhooks(database, settings=settings, resolve=resolver(NAMES))
    for url in (
        "http://127.0.0.1:9000/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://local.example.com/",
    ):
        guard.check(url)
    target = guard.target("http://local.example.com:9000/hook")
    assert (str(target.connect_url()), target.authority) == (
        "http://127.0.0.1:9000/hook",
        "local.example.com:9000",
    )
    for url in (
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://metadata.example.com/",
    ):
        with pytest.raises(WebhookRefused):
            guard.check(url)
