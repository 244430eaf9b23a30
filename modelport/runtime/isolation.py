"""What the server hands to processes that run module code or build its environment: an explicit, minimal
environment instead of its own.

The server's environment holds its secrets (`MODELPORT_BOOTSTRAP_TOKEN`, the S3 and database credentials,
cloud keys), and module code must not read them. Workers get only what a program needs to run and find its
libraries and accelerators, then the module's own declared `env`; builds get that and what uv and pip need to
reach a package index. Anything else, a secret or not, stays with the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["build_environment", "worker_environment"]

_RUNTIME = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "XDG_CACHE_HOME",
        "HF_HOME",
        "TORCH_HOME",
    }
)
_RUNTIME_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "ROCR_", "HIP_")
"""Locales, and the variables that choose accelerators (`CUDA_VISIBLE_DEVICES`, ...)."""
_BUILD_PREFIXES = ("UV_", "PIP_")
"""Package indexes, caches and their settings (an index URL holding credentials is the operator's choice)."""
_PROXIES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"})


def worker_environment(
    declared: Mapping[str, str], *, server: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker: the runtime basics of the server's, then the module's `declared` env."""
    server = os.environ if server is None else server
    kept = {k: v for k, v in server.items() if k in _RUNTIME or k.startswith(_RUNTIME_PREFIXES)}
    return {**kept, **declared}


def build_environment(
    declared: Mapping[str, str], *, server: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a build step: a worker's, plus what reaching a package index needs."""
    server = os.environ if server is None else server
    kept = {k: v for k, v in server.items() if k in _PROXIES or k.startswith(_BUILD_PREFIXES)}
    return {**worker_environment({}, server=server), **kept, **declared}
