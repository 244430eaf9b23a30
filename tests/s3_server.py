"""A throwaway S3 service: moto's server in its own process on 127.0.0.1 (port 0).

moto serves presigned URLs without checking them, so the child puts a check in front that does what S3 does
first with a query-signed request: recompute its SigV4 signature with the one known secret key (method,
path, query and signed headers all count) and refuse it, 403, when it differs or `X-Amz-Expires` has passed.
Requests signed in headers (boto3's own calls) go straight to moto.

Run as a script, this file is the child: it prints `port N` and serves until its stdin closes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
from typing import IO, Any

ACCESS_KEY_ID = "modelport-test"
SECRET_ACCESS_KEY = "modelport-test-secret"
REGION = "us-east-1"


class S3Server:
    """`start()` launches the child and waits for its port; `stop()` ends exactly that process."""

    access_key_id = ACCESS_KEY_ID
    secret_access_key = SECRET_ACCESS_KEY
    region = REGION

    def __init__(self) -> None:
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, *, timeout: float = 60.0) -> str:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in `stop`)
        self._process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline().decode() if ready else ""
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the S3 server did not start: {line!r}\n{self._stderr()}")
        self.endpoint_url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self.endpoint_url

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _stderr(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# The child.


def _presign_refusal(environ: dict[str, Any]) -> str | None:
    """Why S3 would refuse this query-signed request, or None if it would serve it (or it is not one)."""
    import hashlib
    import hmac
    from datetime import UTC, datetime, timedelta
    from urllib.parse import unquote, urlsplit

    raw = urlsplit(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    pairs = [pair.partition("=") for pair in raw.query.split("&") if pair]
    params = {unquote(name): unquote(value) for name, _, value in pairs}
    if "X-Amz-Signature" not in params:
        return None
    try:
        access_key, date, region, service, terminator = params["X-Amz-Credential"].split("/")
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = timedelta(seconds=int(params["X-Amz-Expires"]))
        signed_headers = params["X-Amz-SignedHeaders"].split(";")
    except (KeyError, ValueError):
        return "AuthorizationQueryParametersError"
    if access_key != ACCESS_KEY_ID:
        return "InvalidAccessKeyId"
    if datetime.now(UTC) > signed_at + expires:
        return "AccessDenied"  # "Request has expired"
    signed = sorted((name, value) for name, _, value in pairs if unquote(name) != "X-Amz-Signature")
    query = "&".join(f"{name}={value}" for name, value in signed)

    def header(name: str) -> str:  # WSGI keeps these two out of the HTTP_ variables
        variable = name.upper().replace("-", "_")
        if variable not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            variable = "HTTP_" + variable
        return " ".join(str(environ.get(variable, "")).split())

    headers = "".join(f"{name}:{header(name)}\n" for name in signed_headers)
    payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "UNSIGNED-PAYLOAD")
    canonical = "\n".join(
        [environ["REQUEST_METHOD"], raw.path, query, headers, ";".join(signed_headers), payload]
    )
    scope = f"{date}/{region}/{service}/{terminator}"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{params['X-Amz-Date']}\n{scope}\n{digest}"
    key = f"AWS4{SECRET_ACCESS_KEY}".encode()
    for part in (date, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        return "SignatureDoesNotMatch"
    return None


def _checking_presigned(app: Any) -> Any:
    def checked(environ: dict[str, Any], start_response: Any) -> Any:
        refusal = _presign_refusal(environ)
        if refusal is None:
            return app(environ, start_response)
        body = f"<Error><Code>{refusal}</Code><Message>{refusal}</Message></Error>".encode()
        start_response(
            "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return checked


def _serve() -> None:
    import logging
    import threading

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = _checking_presigned(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes it or dies
    server.shutdown()


if __name__ == "__main__":
    _serve()
