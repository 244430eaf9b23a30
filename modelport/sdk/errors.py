"""What `inference` raises for a request it cannot serve as asked: the caller's fault, answered 400."""

from __future__ import annotations

import re

__all__ = ["RejectedInput"]

_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class RejectedInput(ValueError):
    """A record the module refuses, for a reason its docstring's types cannot state: a prompt longer than
    the model's context, a conversation with an unknown role. The caller gets 400 with `code` (lower-case
    words joined by `_`; `invalid_input` by default) and `message`, and `field` (such as `inputs.messages`)
    names what to change. Other exceptions are the module's fault (500).

        raise RejectedInput(
            f"the prompt is {n} tokens; the context holds {limit}",
            field="inputs.messages",
            code="context_length_exceeded",
        )
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid_input") -> None:
        if not _CODE.fullmatch(code):
            raise ValueError(f"a rejection's code is lower-case words joined by `_`, not {code!r}")
        super().__init__(message)
        self.message, self.field, self.code = message, field, code
