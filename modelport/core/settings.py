"""The one settings object, read once in the composition root from `MODELPORT_*` variables and flags.

A value that can never work is refused when the object is made: a `ValidationError` whose entries name the
field (`loc`) and say what is wrong (`msg`), never repeating a secret. Each value is checked on its own by a
field validator, combinations by the model validator; `Settings.check()` looks at the machine (the data
directory) without changing anything, for the commands to call at start.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelport.core.names import BUCKET_NAME, RATE_STORAGE_SCHEMES, SIGNATURE_ALGORITHMS, TOKEN, database_url

__all__ = ["Settings"]

_BUCKET_PREFIX = re.compile(r"^([a-z0-9][a-z0-9.-]*)?$")
# What botocore accepts as a region name (`botocore.utils.validate_region_name`), but not the empty name.
_REGION = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")
_RATE_STORAGE_SCHEMES = frozenset({"memory", *RATE_STORAGE_SCHEMES})
_DATABASE_BACKENDS = frozenset({"sqlite", "postgresql"})


class Settings(BaseSettings):
    """Server settings. Every field can be set with an environment variable `MODELPORT_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="MODELPORT_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""

    port: int = Field(8000, ge=0, le=65535)
    """Port the HTTP server listens on (0 picks a free one)."""

    data_dir: Path = Path(".modelport")
    """Where uploads, output files and (on the platform) the database and artifacts live."""

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest request body held in memory: a JSON or urlencoded call, a control API request; larger ones get
    413. Of a multipart call, the most its text fields and small files may take in memory. Version artifacts
    and objects stream to disk and have limits of their own."""

    max_form_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    """Largest multipart call; its files go to disk as they arrive (each still within `max_upload_bytes`)."""

    max_body_bytes_in_flight: int = Field(256 * 1024 * 1024, ge=1024)
    """Request-body bytes the server holds in memory at once, over all requests (bodies streamed to disk do
    not count); a request that would pass it gets 503 with `Retry-After` before its body is read. At least
    `max_body_bytes`."""

    body_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    """How long a client may take to send a request's body, counted from the request's start and extended by
    a second for every `body_min_bytes_per_second` bytes it has sent; past it, 408 and the connection is
    closed."""

    body_min_bytes_per_second: int = Field(64 * 1024, ge=1)
    """The slowest upload that `body_timeout_seconds` lets go on: large bodies on slow links pass, while a
    client that trickles its body or stops does not hold a request."""

    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    """Largest single uploaded file; a field's own `max size` may lower it."""

    max_image_pixels: int = Field(40_000_000, ge=1)
    """Largest image (width x height) accepted as input; stops decompression bombs."""

    max_json_depth: int = Field(64, ge=2)
    """Deepest nesting accepted in a JSON body."""

    max_form_fields: int = Field(1000, ge=1)
    """Most parts accepted in one multipart or urlencoded form."""

    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    """How long a client has to send a request's line and headers, counted from the moment it connects and,
    on a kept-alive connection, from the end of the previous response; slower ones are cut off (408)."""

    max_connections_per_address: int = Field(256, ge=0)
    """Most connections one client IP address may hold open at once; more are answered 503 and closed
    (0: no limit). Behind a reverse proxy every connection comes from the proxy: raise it, or set 0 there."""

    database_url: str | None = None
    """SQLAlchemy URL of the metadata database (`postgresql://...` works); default: SQLite in `data_dir`."""

    bootstrap_token: SecretStr | None = None
    """The first admin's API token (`mp_` and printable ASCII, like the tokens modelport makes); without it,
    the server makes one on first start and prints it once."""

    session_seconds: int = Field(3600, ge=60, le=30 * 86_400)
    """Lifetime of the bearer tokens that `POST /api/v1/auth/token` hands out for a password."""

    console_session_seconds: int = Field(8 * 3600, ge=60, le=30 * 86_400)
    """Lifetime of a web console session (`/ui`): after it, the console asks to sign in again."""

    login_attempts: str = "5/minute"
    """Failed password logins allowed per account and per client address before 429 (`5/minute`)."""

    oidc_issuer: str | None = None
    """An OpenID Connect issuer (e.g. `https://sso.example.com/realms/main`) whose access tokens are accepted.
    It must match the tokens' `iss` claim exactly."""

    worker_paths: Annotated[list[Path], NoDecode] = []
    """Directories (comma-separated absolute paths) that every module's workers may read and write besides
    their own, such as a shared scratch volume; the data directory stays out of reach even beneath one."""

    oidc_audience: Annotated[list[str], NoDecode] = []
    """Accepted audiences: a token passes if its `aud` contains one of them or its `azp` is one of them."""

    oidc_client_id: str | None = None
    """The public OpenID Connect client (authorization code with PKCE) that browser applications sign in
    with. `GET /api/v1/auth/config` names it, with the issuer, to pages such as the gallery's receipt page;
    its access tokens must still name an accepted audience (`aud` or `azp`)."""

    oidc_algorithms: Annotated[list[str], NoDecode] = [
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
    ]
    """Signature algorithms accepted from the issuer; symmetric ones and `none` are never accepted."""

    oidc_leeway_seconds: int = Field(30, ge=0, le=300)
    """Clock skew allowed when checking `exp`, `nbf` and `iat`."""

    oidc_username_claim: str = "preferred_username"
    """The claim that names an OIDC user (falls back to `sub`)."""

    oidc_groups_claim: str = "groups"
    """The claim that lists a user's groups as full paths (`/team/users`)."""

    oidc_roles_claim: str = "realm_access.roles"
    """Dotted path of the claim that lists a user's roles; `admin` and `developer` are recognised."""

    oidc_jwks_refresh_seconds: float = Field(300.0, ge=1, le=86_400)
    """How long fetched signing keys are used before they are fetched again; an unknown key id triggers
    at most one early fetch per `oidc_jwks_min_refetch_seconds`."""

    oidc_jwks_min_refetch_seconds: float = Field(10.0, ge=0, le=3600)
    """Least time between two fetches of the issuer's keys caused by unknown key ids."""

    redis_url: str | None = None
    """`redis://host:port/db` to share rate-limit counters between gateway processes; default: in memory."""

    max_object_bytes: int = Field(5 * 1024**3, ge=1)
    """Largest object the files API accepts in one upload."""

    storage_backend: Literal["local", "s3"] = "local"
    """Where buckets live: `local` (files under `data_dir/objects`) or `s3` (any S3-compatible service)."""

    s3_endpoint_url: str | None = None
    """The S3 service's URL (`http://minio:9000`); default: AWS for `s3_region`."""

    s3_region: str = "us-east-1"
    """The S3 region requests are signed for."""

    s3_access_key_id: str | None = None
    """S3 credentials; default: boto3's own lookup (environment, profile, instance role)."""

    s3_secret_access_key: SecretStr | None = None

    s3_bucket_prefix: str = "modelport-"
    """Prepended to each bucket's name to make the S3 bucket name (`models` → `modelport-models`)."""

    request_bucket: str = "requests"
    """The bucket keeping request files: uploads of synchronous calls and file outputs. A `Storage` manifest
    of this name sets their retention and who may browse them; without one they are kept
    `request_retention_days` days and only admins see them."""

    request_retention_days: float = Field(7.0, gt=0, le=3650)
    """How long request files are kept when no `Storage` manifest of `request_bucket` says otherwise."""

    presign_max_seconds: int = Field(7 * 86_400, ge=1, le=7 * 86_400)
    """Longest lifetime a presigned URL may be given (S3's own limit is 7 days)."""

    storage_sweep_seconds: float = Field(300.0, gt=0, le=86_400)
    """How often expired objects are deleted and bucket usage is recounted."""

    model_cache_bytes: int = Field(20 * 1024**3, ge=1)
    """Disk the local copies of model weights may take before the least recently used are dropped."""

    max_artifact_bytes: int = Field(512 * 1024 * 1024, ge=1)
    """Largest version artifact (a packed module tree) the server accepts."""

    source_poll_seconds: float = Field(5.0, gt=0, le=3600)
    """How often the server checks which git sources are due (each module's `pollSeconds` sets its pace)."""

    drain_seconds: float = Field(30.0, ge=0, le=3600)
    """How long a version being stopped, or the server when it stops, lets in-flight calls finish."""

    rollback_grace_seconds: float = Field(300.0, ge=0, le=86_400)
    """How long a replaced version stays running, so that rolling back to it is instant."""

    worker_threads: int | None = Field(None, ge=1)
    """Threads each worker's numeric libraries may use; default: the cores divided among the workers."""

    build_timeout_seconds: float = Field(1800.0, gt=0, le=86_400)
    """How long each step of a version's environment build (uv creating it, uv installing the requirements)
    may run; a step that takes longer is killed and the build fails."""

    log_max_bytes: int = Field(10 * 1024 * 1024, ge=4096, le=1024**3)
    """Size at which a module's worker log file is rotated (`<module>.log` becomes `<module>.log.1`)."""

    log_backups: int = Field(3, ge=0, le=100)
    """Rotated worker log files kept per module, besides the current one."""

    request_log: bool = True
    """Keep a row per answered call in the request log (off: no rows and no payloads are written)."""

    request_log_buffer: int = Field(100_000, ge=1, le=10_000_000)
    """Calls the request log holds in memory while they wait to be written; past it new ones are dropped."""

    request_log_flush_seconds: float = Field(1.0, gt=0, le=60)
    """How often the request log writes what it holds (at most this much is lost if the server is killed)."""

    request_log_days: float = Field(30.0, gt=0, le=3650)
    """How long the request log keeps a call's row (captured payloads go with the request bucket's)."""

    metrics_public: bool = False
    """Serve `GET /metrics` (Prometheus) to anyone; by default only an admin's token may scrape it."""

    stats_minute_days: float = Field(8.0, gt=0, le=3650)
    """How long call statistics keep their per-minute rollups (the steps of 1m and 5m read them)."""

    stats_hour_days: float = Field(400.0, gt=0, le=3650)
    """How long call statistics keep their per-hour rollups (the steps of 1h read them)."""

    drift_max_samples_per_minute: int = Field(600, gt=0, le=1_000_000)
    """Records of each module version whose features drift watching keeps per minute; the rest are skipped."""

    drift_days: float = Field(30.0, gt=0, le=3650)
    """How long drift watching keeps a call's features (references taken from them are kept apart)."""

    job_concurrency: int = Field(32, ge=1, le=10_000)
    """Jobs of one module each gateway runs at once. Their records wait behind synchronous calls' in the
    module's queue, so a flood of jobs never delays a caller waiting on its connection."""

    job_lease_seconds: float = Field(30.0, ge=1, le=3600)
    """How long a gateway's claim on a running job lasts without a heartbeat (renewed every third of it);
    a job whose gateway died runs again after this."""

    job_max_attempts: int = Field(5, ge=1, le=100)
    """Runs a job gets for retryable failures (a worker died, a timeout, the module unavailable)."""

    job_retry_seconds: float = Field(2.0, gt=0, le=3600)
    """The first retry's backoff; each further one doubles it (with jitter), up to an hour."""

    job_ttl_hours: float = Field(24.0, gt=0, le=24 * 3650)
    """How long a finished job, its inputs and its outputs are kept before they are swept."""

    job_max_wait_seconds: float = Field(60.0, ge=0, le=3600)
    """The longest `GET /api/v1/jobs/{id}?wait=` long-poll a caller may ask for."""

    batch_concurrency: int = Field(4, ge=1, le=1024)
    """Requests of up to `maxBatchSize` records each that a batch keeps in its module's queue at once."""

    batch_part_records: int = Field(10_000, ge=1, le=10_000_000)
    """Records per results part of a batch: a part is written whole, and is the unit a resumed batch
    skips."""

    webhook_allowed_networks: Annotated[list[str], NoDecode] = []
    """Networks (comma-separated CIDRs) webhooks may reach although they are private, loopback or
    link-local: for tests and on-premise receivers. Empty: only public addresses."""

    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    """How long one webhook delivery may take, connection included."""

    webhook_retry_seconds: float = Field(5.0, gt=0, le=86_400)
    """The first redelivery's delay; each further one grows (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h at
    the default), scaled by this over 5 s."""

    webhook_retry_hours: float = Field(36.0, gt=0, le=24 * 30)
    """How long an event keeps being retried before it is marked failed."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise _invalid("must not be empty; 0.0.0.0 or :: listens on every interface")
        if any(char.isspace() for char in value) or "/" in value:
            raise _invalid("must be a host name or an IP address, without spaces, slashes or a scheme")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value:
            problem = _database_problem(value)
            if problem:
                raise _invalid(problem)
        return value

    @field_validator("bootstrap_token")
    @classmethod
    def _bootstrap_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Never repeat the value: it is an admin's credential.
        if value is not None and not TOKEN.match(value.get_secret_value()):
            raise _invalid(
                "must be mp_ followed by printable ASCII without spaces, as only such tokens are looked up "
                "(unset it to have the server make one)"
            )
        return value

    @field_validator("login_attempts")
    @classmethod
    def _login_attempts(cls, value: str) -> str:
        import limits  # here, not at the top: every command imports the settings

        try:
            items = limits.parse_many(value)
        except ValueError:
            raise _invalid(f"{value!r} is not a rate such as 5/minute") from None
        if len(items) != 1:
            raise _invalid(f"{value!r} holds {len(items)} rates; give exactly one, such as 5/minute")
        if items[0].amount < 1:
            raise _invalid(f"{value!r} allows no attempt at all, so nobody could sign in with a password")
        return value

    @field_validator("oidc_issuer")
    @classmethod
    def _oidc_issuer(cls, value: str | None) -> str | None:
        if value:
            problem = _http_url_problem(value)
            if problem is None and (urlsplit(value).query or urlsplit(value).fragment):
                problem = "must have no query or fragment (OpenID Connect issuers never do)"
            if problem:
                raise _invalid(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # Never repeat the URL: it may hold a password.
        if value:
            scheme, separator, _ = value.partition("://")
            if not separator or scheme.lower().removeprefix("async+") not in _RATE_STORAGE_SCHEMES:
                raise _invalid("must be a redis://, rediss:// or unix:// URL (or memory://)")
            if not _has_valid_port(value):
                raise _invalid("has a port that is not a number from 0 to 65535")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := _http_url_problem(value)):
            raise _invalid(problem)
        return value

    @field_validator("s3_region")
    @classmethod
    def _s3_region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise _invalid(f"{value!r} is not a region name such as us-east-1")
        return value

    @field_validator("s3_access_key_id", "s3_secret_access_key")
    @classmethod
    def _not_empty(cls, value: str | SecretStr | None) -> str | SecretStr | None:
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        if secret is not None and not secret.strip():
            raise _invalid("must not be empty; unset it to use boto3's own credentials")
        return value

    @field_validator("s3_bucket_prefix")
    @classmethod
    def _s3_bucket_prefix(cls, value: str) -> str:
        if not _BUCKET_PREFIX.match(value) or any(pair in value for pair in ("..", ".-", "-.")):
            raise _invalid(
                f"{value!r} cannot begin an S3 bucket name: use lowercase letters, digits, hyphens and "
                "single dots, starting with a letter or a digit"
            )
        return value

    @field_validator("request_bucket")
    @classmethod
    def _request_bucket(cls, value: str) -> str:
        if not BUCKET_NAME.match(value):
            raise _invalid(f"{value!r} is not a bucket name: expected 3-63 of a-z, 0-9 and -")
        return value

    @field_validator("worker_paths")
    @classmethod
    def _absolute(cls, value: list[Path]) -> list[Path]:
        relative = [str(path) for path in value if not path.is_absolute()]
        if relative:
            raise _invalid(f"expected absolute paths: {', '.join(relative)}")
        return value

    @field_validator(
        "oidc_audience", "oidc_algorithms", "worker_paths", "webhook_allowed_networks", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise _invalid(
                    f"{network!r} is not a network (an address or a CIDR such as 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in SIGNATURE_ALGORITHMS]
        if refused:
            raise _invalid(f"not an accepted signature algorithm: {', '.join(refused)}")
        if not value:
            raise _invalid("must name at least one signature algorithm, such as RS256")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> Settings:
        problems: list[tuple[str, str]] = []
        if self.oidc_audience and not self.oidc_issuer:
            problems.append(
                ("oidc_audience", "is set but MODELPORT_OIDC_ISSUER is not, so no token is checked")
            )
        if self.oidc_issuer and not self.oidc_audience:
            problems.append(
                (
                    "oidc_audience",
                    "is empty while MODELPORT_OIDC_ISSUER is set: name the client ids (comma-separated) "
                    "whose access tokens this server accepts, or any client of the issuer could call it",
                )
            )
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            problems.append(
                (
                    "max_body_bytes_in_flight",
                    f"is less than MODELPORT_MAX_BODY_BYTES ({self.max_body_bytes}), so the largest body "
                    "accepted could never be received",
                )
            )
        if self.s3_access_key_id is not None and self.s3_secret_access_key is None:
            problems.append(
                ("s3_access_key_id", "is set without MODELPORT_S3_SECRET_ACCESS_KEY; set both or neither")
            )
        if self.s3_secret_access_key is not None and self.s3_access_key_id is None:
            problems.append(
                ("s3_secret_access_key", "is set without MODELPORT_S3_ACCESS_KEY_ID; set both or neither")
            )
        if self.storage_backend == "s3":
            physical = self.s3_bucket_prefix + self.request_bucket
            if len(physical) > 63:
                problems.append(
                    ("request_bucket", f"makes the S3 bucket name {physical!r}, longer than 63 characters")
                )
            elif _is_ip_address(physical):
                problems.append(("request_bucket", f"makes the S3 bucket name {physical!r}, an IP address"))
        if problems:
            raise _refusal([(field, getattr(self, field), problem) for field, problem in problems])
        return self

    def check(self) -> None:
        """Check what these settings ask of this machine, changing nothing: `data_dir` must be a directory
        this process may write in, or one it can create. `ValidationError` naming the field otherwise."""
        problem = _directory_problem(self.data_dir)
        if problem:
            raise _refusal([("data_dir", str(self.data_dir), problem)])

    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelport.db').resolve()}"

    def storage_dir(self) -> Path:
        return self.data_dir / "objects"

    def threads_per_worker(self, workers: int) -> int:
        if self.worker_threads is not None:
            return self.worker_threads
        return max(1, (os.cpu_count() or 1) // max(1, workers))


def _invalid(problem: str) -> PydanticCustomError:
    """The error a validator raises: its message is `problem` alone, without pydantic's `Value error, `."""
    return PydanticCustomError("invalid_setting", "{problem}", {"problem": problem})


def _refusal(problems: list[tuple[str, object, str]]) -> ValidationError:
    """A `ValidationError` with one entry per (field, value, problem)."""
    errors = [
        InitErrorDetails(type=_invalid(problem), loc=(field,), input=value)
        for field, value, problem in problems
    ]
    return ValidationError.from_exception_data(Settings.__name__, errors)


def _has_valid_port(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - reading it parses it
    except ValueError:
        return False
    return True


def _http_url_problem(value: str) -> str | None:
    if any(char.isspace() for char in value):
        return "must be an absolute http:// or https:// URL without spaces"
    if not _has_valid_port(value):
        return "must be an absolute http:// or https:// URL with a port from 0 to 65535"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL, such as https://host.example.com"
    return None


def _database_problem(value: str) -> str | None:
    """What keeps `value` from being a database URL that `modelport.db.Database` can open; None if nothing.
    Never repeats the URL: it may hold a password."""
    from sqlalchemy.engine import make_url  # here, not at the top: every command imports the settings
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(database_url(value))
        port = url.port
    except (ArgumentError, ValueError):
        return "is not a database URL such as postgresql://user@host/db or sqlite:///path/modelport.db"
    backend = url.get_backend_name()
    if backend not in _DATABASE_BACKENDS:
        return f"uses the database {backend!r}; modelport works with sqlite and postgresql"
    if port is not None and not 1 <= port <= 65535:
        return "has a port that is not a number from 1 to 65535"
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        return f"names the driver {url.get_driver_name()!r}, which SQLAlchemy does not know"
    if dialect.is_async:
        return f"names the asyncio driver {url.get_driver_name()!r}; use a synchronous one such as psycopg"
    try:
        dialect.import_dbapi()
    except ImportError:
        return f"needs the driver {url.get_driver_name()!r}, which is not installed"
    return None


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _directory_problem(path: Path) -> str | None:
    """Why `path` cannot be used as a directory that this process writes in; None if it can."""
    path = path.absolute()
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    if existing == path:
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user"
        return None
    if not existing.is_dir():
        return f"{path} cannot be created: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {existing} is not writable by this user"
    return None
