"""The one settings object, read once in the composition root from `MODELPORT_*` variables and flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Server settings. Every field can be set with an environment variable `MODELPORT_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""

    port: int = Field(8000, ge=0, le=65535)
    """Port the HTTP server listens on (0 picks a free one)."""

    data_dir: Path = Path(".modelport")
    """Where uploads, output files and (on the platform) the database and artifacts live."""

    max_body_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""

    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    """Largest single uploaded file; a field's own `max size` may lower it."""

    max_image_pixels: int = Field(40_000_000, ge=1)
    """Largest image (width x height) accepted as input; stops decompression bombs."""

    max_json_depth: int = Field(64, ge=2)
    """Deepest nesting accepted in a JSON body."""

    max_form_fields: int = Field(1000, ge=1)
    """Most parts accepted in one multipart or urlencoded form."""

    database_url: str | None = None
    """SQLAlchemy URL of the metadata database (`postgresql://...` works); default: SQLite in `data_dir`."""

    bootstrap_token: SecretStr | None = None
    """The first admin's API token; without it, the server makes one on first start and prints it once."""

    session_seconds: int = Field(3600, ge=60, le=30 * 86_400)
    """Lifetime of the bearer tokens that `POST /api/v1/auth/token` hands out for a password."""

    login_attempts: str = "5/minute"
    """Failed password logins allowed per account and per client address before 429 (`5/minute`)."""

    oidc_issuer: str | None = None
    """An OpenID Connect issuer (e.g. `https://sso.example.com/realms/main`) whose access tokens are accepted.
    It must match the tokens' `iss` claim exactly."""

    oidc_audience: Annotated[list[str], NoDecode] = []
    """Accepted audiences: a token passes if its `aud` contains one of them or its `azp` is one of them."""

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
    """How long a version being stopped may finish its in-flight calls."""

    rollback_grace_seconds: float = Field(300.0, ge=0, le=86_400)
    """How long a replaced version stays running, so that rolling back to it is instant."""

    worker_threads: int | None = Field(None, ge=1)
    """Threads each worker's numeric libraries may use; default: the cores divided among the workers."""

    @field_validator("oidc_audience", "oidc_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        refused = [alg for alg in value if alg not in allowed]
        if refused:
            raise ValueError(f"not an accepted signature algorithm: {', '.join(refused)}")
        return value

    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelport.db').resolve()}"

    def storage_dir(self) -> Path:
        return self.data_dir / "objects"

    def threads_per_worker(self, workers: int) -> int:
        if self.worker_threads is not None:
            return self.worker_threads
        return max(1, (os.cpu_count() or 1) // max(1, workers))
