"""The roles a user may hold, shared by the tables, the business rules, the API records and the client."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    """What a user may do: `admin` everything, `developer` manage the modules its groups own, `user` call
    the modules its groups may call."""

    ADMIN = "admin"
    DEVELOPER = "developer"
    USER = "user"
