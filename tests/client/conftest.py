"""Fixtures of the client tests: clients whose transport is scripted and recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from recording import Handler, Recorder

from modelport.client import Client


@pytest.fixture
def client_for() -> Iterator[Callable[[Handler], tuple[Client, Recorder]]]:
    """Make a client for `http://platform.test/base/` whose requests `handler` answers, with its recorder."""
    made: list[Client] = []

    def make(handler: Handler) -> tuple[Client, Recorder]:
        recorder = Recorder(handler)
        client = Client("http://platform.test/base/", "tok", transport=httpx.MockTransport(recorder))
        made.append(client)
        return client, recorder

    yield make
    for client in made:
        client.close()
