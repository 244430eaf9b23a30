"""No secret survives `redact`, and the log filter applies it to whole records."""

from __future__ import annotations

import logging

import pytest

from modelport.obs.redact import RedactingFilter, redact

TOKEN = "mp_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {TOKEN}", TOKEN),
        (f"authorization={JWT}", JWT),
        (f"calling with {TOKEN} now", TOKEN),
        (f"got {JWT}", JWT),
        ('{"username": "ana", "password": "hunter2-correct"}', "hunter2-correct"),
        ("password=hunter2-correct&user=ana", "hunter2-correct"),
        ("Cookie: session=abcdef0123456789", "abcdef0123456789"),
        ("pip: https://ana:s3cr3t-pass@pypi.example.com/simple", "s3cr3t-pass"),
        ("client_secret: 0123456789abcdef", "0123456789abcdef"),
        ("headers: [(b'authorization', b'Bearer abcdefgh12345678')]", "abcdefgh12345678"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned and "[redacted]" in cleaned


def test_ordinary_text_is_left_alone() -> None:
    text = "deployed echo v1.2.0 to 2 workers in 0.8 s (module_not_found for tokenizer-free calls)"
    assert redact(text) == text


def test_the_filter_cleans_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("modelport.test-redact")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logger.exception("login with %s failed", TOKEN)
    assert TOKEN not in caplog.text
    assert "login with mp_[redacted] failed" in caplog.text
