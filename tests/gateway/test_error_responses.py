"""The one mapping from errors to answers: what each answer says, and what goes to the server's log."""

from __future__ import annotations

import logging

import pytest

from modelport.core.errors import ModuleError, ModuleUnavailable, Overloaded
from modelport.gateway.errors import error_response


@pytest.mark.parametrize(
    "error",
    [Overloaded("queue full", retry_after=1), ModuleUnavailable("being replaced", retry_after=2)],
)
def test_back_pressure_is_answered_without_an_error_in_the_log(error, caplog):
    with caplog.at_level(logging.DEBUG, logger="modelport.gateway"):
        for _ in range(100):  # a flood of refused callers
            response = error_response(error, request_id="r")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("error", [ModuleError("boom"), RuntimeError("a bug")])
def test_failures_are_logged_as_errors_with_the_request_id(error, caplog):
    with caplog.at_level(logging.DEBUG, logger="modelport.gateway"):
        response = error_response(error, request_id="r-1")
    assert response.status_code == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "r-1" in errors[0].getMessage()
