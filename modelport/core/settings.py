"""The one settings object, read once in the composition root from `MODELPORT_*` variables and flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    token_cache_seconds: float = Field(1.0, ge=0, le=60)
    """How long a verified API token is trusted without asking the database again."""

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

    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelport.db').resolve()}"

    def threads_per_worker(self, workers: int) -> int:
        if self.worker_threads is not None:
            return self.worker_threads
        return max(1, (os.cpu_count() or 1) // max(1, workers))
