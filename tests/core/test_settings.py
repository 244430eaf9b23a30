"""Settings that can never work are refused when `Settings` is made, naming the field and never a secret;
`Settings.check()` refuses a data directory this process cannot use, without touching the disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelport.core.errors import InvalidKey
from modelport.core.settings import Settings
from modelport.storage.keys import check_bucket_name

SECRET = "not-a-token-3f9a7c1e5b"  # must never appear in a message
PASSWORD = "hunter2-8d41be07c2"  # likewise
LONGEST = "r" * 63  # the longest bucket name


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `MODELPORT_*` variable of the machine running the tests reaches them."""
    for name in list(os.environ):
        if name.startswith("MODELPORT_"):
            monkeypatch.delenv(name)


BAD: dict[str, tuple[dict[str, str], str, str]] = {
    # id: ({variable without MODELPORT_: value}, the field refused, part of the message)
    "host-empty": ({"HOST": ""}, "host", "must not be empty"),
    "host-blank": ({"HOST": "   "}, "host", "must not be empty"),
    "host-url": ({"HOST": "http://0.0.0.0"}, "host", "host name or an IP address"),
    "host-space": ({"HOST": "my host"}, "host", "host name or an IP address"),
    "port-too-big": ({"PORT": "70000"}, "port", "65535"),
    "body-too-small": ({"MAX_BODY_BYTES": "5"}, "max_body_bytes", "1024"),
    "header-timeout-zero": ({"HEADER_TIMEOUT_SECONDS": "0"}, "header_timeout_seconds", "greater than 0"),
    "header-timeout-words": ({"HEADER_TIMEOUT_SECONDS": "ten"}, "header_timeout_seconds", "a valid number"),
    "connections-negative": (
        {"MAX_CONNECTIONS_PER_ADDRESS": "-1"},
        "max_connections_per_address",
        "greater than or equal to 0",
    ),
    "database-mysql": (
        {"DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"},
        "database_url",
        "sqlite and postgresql",
    ),
    "database-not-a-url": ({"DATABASE_URL": "modelport.db"}, "database_url", "is not a database URL"),
    "database-bad-port": (
        {"DATABASE_URL": f"postgresql://u:{PASSWORD}@h:port/db"},
        "database_url",
        "is not a database URL",
    ),
    "database-port-range": ({"DATABASE_URL": "postgresql://h:99999/db"}, "database_url", "1 to 65535"),
    "database-unknown-driver": (
        {"DATABASE_URL": "postgresql+nosuchdriver://h/db"},
        "database_url",
        "SQLAlchemy does not know",
    ),
    "database-async-driver": (
        {"DATABASE_URL": "postgresql+asyncpg://h/db"},
        "database_url",
        "asyncio driver",
    ),
    "database-async-sqlite": ({"DATABASE_URL": "sqlite+aiosqlite:///x.db"}, "database_url", "asyncio driver"),
    "token-no-prefix": ({"BOOTSTRAP_TOKEN": SECRET}, "bootstrap_token", "must be mp_"),
    "token-empty": ({"BOOTSTRAP_TOKEN": ""}, "bootstrap_token", "must be mp_"),
    "token-prefix-only": ({"BOOTSTRAP_TOKEN": "mp_"}, "bootstrap_token", "must be mp_"),
    "token-upper": ({"BOOTSTRAP_TOKEN": f"MP_{SECRET}"}, "bootstrap_token", "must be mp_"),
    "token-space": ({"BOOTSTRAP_TOKEN": f" mp_{SECRET}"}, "bootstrap_token", "must be mp_"),
    "token-inner": ({"BOOTSTRAP_TOKEN": f"mp_{SECRET} x"}, "bootstrap_token", "must be mp_"),
    "token-latin": ({"BOOTSTRAP_TOKEN": f"mp_{SECRET}é"}, "bootstrap_token", "must be mp_"),
    "login-words": ({"LOGIN_ATTEMPTS": "five"}, "login_attempts", "is not a rate"),
    "login-unit": ({"LOGIN_ATTEMPTS": "5/fortnight"}, "login_attempts", "is not a rate"),
    "login-two": ({"LOGIN_ATTEMPTS": "5/minute;20/hour"}, "login_attempts", "exactly one"),
    "login-zero": ({"LOGIN_ATTEMPTS": "0/minute"}, "login_attempts", "no attempt"),
    "issuer-no-scheme": (
        {"OIDC_ISSUER": "sso.example.com/realms/main"},
        "oidc_issuer",
        "http:// or https://",
    ),
    "issuer-ftp": ({"OIDC_ISSUER": "ftp://sso.example.com"}, "oidc_issuer", "http:// or https://"),
    "issuer-no-host": ({"OIDC_ISSUER": "https://"}, "oidc_issuer", "http:// or https://"),
    "issuer-port": ({"OIDC_ISSUER": "https://sso.example.com:99999/x"}, "oidc_issuer", "port"),
    "issuer-query": (
        {"OIDC_ISSUER": "https://sso.example.com/realms/main?x=1"},
        "oidc_issuer",
        "no query or fragment",
    ),
    "issuer-fragment": (
        {"OIDC_ISSUER": "https://sso.example.com/realms/main#top"},
        "oidc_issuer",
        "no query or fragment",
    ),
    "audience-without-issuer": (
        {"OIDC_AUDIENCE": "modelport"},
        "oidc_audience",
        "MODELPORT_OIDC_ISSUER is not",
    ),
    "issuer-without-audience": (
        {"OIDC_ISSUER": "https://sso.example.com/realms/main"},
        "oidc_audience",
        "any client of the issuer",
    ),
    "audience-empty-issuer": (
        {"OIDC_ISSUER": "", "OIDC_AUDIENCE": "modelport"},
        "oidc_audience",
        "MODELPORT_OIDC_ISSUER is not",
    ),
    "algorithms-hmac": ({"OIDC_ALGORITHMS": "HS256"}, "oidc_algorithms", "not an accepted"),
    "algorithms-empty": ({"OIDC_ALGORITHMS": ""}, "oidc_algorithms", "at least one"),
    "redis-http": ({"REDIS_URL": f"http://:{PASSWORD}@h:6379"}, "redis_url", "redis://"),
    "redis-no-scheme": ({"REDIS_URL": "localhost:6379"}, "redis_url", "redis://"),
    "redis-port": ({"REDIS_URL": f"redis://:{PASSWORD}@h:port/0"}, "redis_url", "port"),
    "s3-endpoint-empty": ({"S3_ENDPOINT_URL": ""}, "s3_endpoint_url", "http:// or https://"),
    "s3-endpoint-no-scheme": ({"S3_ENDPOINT_URL": "minio:9000"}, "s3_endpoint_url", "http:// or https://"),
    "s3-endpoint-port": ({"S3_ENDPOINT_URL": "http://minio:nine"}, "s3_endpoint_url", "port"),
    "s3-region-empty": ({"S3_REGION": ""}, "s3_region", "region name"),
    "s3-region-space": ({"S3_REGION": "us east 1"}, "s3_region", "region name"),
    "s3-region-hyphen": ({"S3_REGION": "-us-east-1"}, "s3_region", "region name"),
    "s3-key-without-secret": ({"S3_ACCESS_KEY_ID": "AKIAEXAMPLE"}, "s3_access_key_id", "set both or neither"),
    "s3-secret-without-key": (
        {"S3_SECRET_ACCESS_KEY": PASSWORD},
        "s3_secret_access_key",
        "set both or neither",
    ),
    "s3-key-empty": (
        {"S3_ACCESS_KEY_ID": "", "S3_SECRET_ACCESS_KEY": PASSWORD},
        "s3_access_key_id",
        "must not be empty",
    ),
    "s3-secret-blank": (
        {"S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "S3_SECRET_ACCESS_KEY": " "},
        "s3_secret_access_key",
        "must not be empty",
    ),
    "prefix-upper": (
        {"S3_BUCKET_PREFIX": "Modelport-"},
        "s3_bucket_prefix",
        "cannot begin an S3 bucket name",
    ),
    "prefix-hyphen-first": ({"S3_BUCKET_PREFIX": "-mp"}, "s3_bucket_prefix", "cannot begin"),
    "prefix-underscore": ({"S3_BUCKET_PREFIX": "mp_"}, "s3_bucket_prefix", "cannot begin"),
    "prefix-two-dots": ({"S3_BUCKET_PREFIX": "mp..x-"}, "s3_bucket_prefix", "cannot begin"),
    "prefix-dot-hyphen": ({"S3_BUCKET_PREFIX": "mp.-x"}, "s3_bucket_prefix", "cannot begin"),
    "bucket-short": ({"REQUEST_BUCKET": "ab"}, "request_bucket", "not a bucket name"),
    "bucket-upper": ({"REQUEST_BUCKET": "Requests"}, "request_bucket", "not a bucket name"),
    "bucket-dot": ({"REQUEST_BUCKET": "my.requests"}, "request_bucket", "not a bucket name"),
    "bucket-end": ({"REQUEST_BUCKET": "requests-"}, "request_bucket", "not a bucket name"),
    "bucket-long": ({"REQUEST_BUCKET": "r" * 64}, "request_bucket", "not a bucket name"),
    "s3-physical-too-long": (
        {"STORAGE_BACKEND": "s3", "S3_BUCKET_PREFIX": "p" * 56},
        "request_bucket",
        "longer than 63",
    ),
    "s3-physical-ip": (
        {"STORAGE_BACKEND": "s3", "S3_BUCKET_PREFIX": "10.0.0.", "REQUEST_BUCKET": "100"},
        "request_bucket",
        "an IP address",
    ),
}


def _refusal(source: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ValidationError:
    if source == "env":
        for name, value in env.items():
            monkeypatch.setenv(f"MODELPORT_{name}", value)
        values: dict[str, str] = {}
    else:
        values = {name.lower(): value for name, value in env.items()}
    with pytest.raises(ValidationError) as refused:
        Settings(**values)  # type: ignore[arg-type]
    return refused.value


@pytest.mark.parametrize("source", ["env", "constructor"])
@pytest.mark.parametrize(("env", "field", "message"), list(BAD.values()), ids=list(BAD))
def test_a_setting_that_cannot_work_is_refused_by_name(
    source: str, env: dict[str, str], field: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = _refusal(source, env, monkeypatch)
    problems = [(error["loc"], error["msg"]) for error in refusal.errors(include_url=False)]
    assert len(problems) == 1, problems
    assert problems[0][0] == (field,)
    assert message in problems[0][1]
    for secret in (SECRET, PASSWORD):
        assert secret not in problems[0][1]
        assert secret not in str(refusal)


def test_each_problem_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_BOOTSTRAP_TOKEN", SECRET)
    monkeypatch.setenv("MODELPORT_REQUEST_BUCKET", "Requests")
    monkeypatch.setenv("MODELPORT_PORT", "-1")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert {error["loc"] for error in refused.value.errors()} == {
        ("bootstrap_token",),
        ("request_bucket",),
        ("port",),
    }


def test_the_defaults_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    settings.check()
    assert settings == Settings.model_validate(settings.model_dump())


GOOD = [
    {"HOST": "0.0.0.0"},
    {"HOST": "::"},
    {"HOST": "gateway-1.internal"},
    {"PORT": "0"},
    {"HEADER_TIMEOUT_SECONDS": "2.5"},
    {"MAX_CONNECTIONS_PER_ADDRESS": "0"},
    {"MAX_CONNECTIONS_PER_ADDRESS": "10000"},
    {"DATABASE_URL": ""},
    {"DATABASE_URL": "sqlite:///relative/modelport.db"},
    {"DATABASE_URL": "sqlite:////var/lib/modelport/modelport.db"},
    {"DATABASE_URL": f"postgresql://modelport:{PASSWORD}@127.0.0.1:5432/modelport"},
    {"DATABASE_URL": "postgres://db.internal/modelport"},
    {"DATABASE_URL": "postgresql+psycopg://db.internal/modelport?sslmode=require"},
    {"DATABASE_URL": "postgresql:///modelport"},
    {"BOOTSTRAP_TOKEN": "mp_test-admin-token-0123456789abcdef"},
    {"BOOTSTRAP_TOKEN": "mp_Ab0-_9xYzQ3kLmN5pR7sT1uV2wX4yZ6aB8cD0eF2gH"},
    {"LOGIN_ATTEMPTS": "10/hour"},
    {"LOGIN_ATTEMPTS": "5 per minute"},
    {"LOGIN_ATTEMPTS": "100/day"},
    {"OIDC_ISSUER": ""},
    {"OIDC_ISSUER": "https://sso.example.com/realms/main", "OIDC_AUDIENCE": "modelport"},
    {"OIDC_ISSUER": "http://127.0.0.1:8080/realms/main/", "OIDC_AUDIENCE": "a, b"},
    {"OIDC_ALGORITHMS": "ES512,EdDSA"},
    {"REDIS_URL": ""},
    {"REDIS_URL": "memory://"},
    {"REDIS_URL": "redis://localhost:6379/0"},
    {"REDIS_URL": f"rediss://:{PASSWORD}@redis.internal:6380/1?stream_timeout=1"},
    {"REDIS_URL": "unix:///run/redis.sock?db=0"},
    {"REDIS_URL": "redis+unix:///run/redis.sock"},
    {"REDIS_URL": "async+redis://localhost"},
    {"STORAGE_BACKEND": "s3"},
    {"S3_ENDPOINT_URL": "http://minio:9000"},
    {"S3_ENDPOINT_URL": "https://s3.eu-west-3.amazonaws.com"},
    {"S3_ENDPOINT_URL": "http://[::1]:9000"},
    {"S3_REGION": "eu-west-3"},
    {"S3_REGION": "minio-local"},
    {"S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "S3_SECRET_ACCESS_KEY": PASSWORD},
    {"S3_BUCKET_PREFIX": ""},
    {"S3_BUCKET_PREFIX": "t1a2b3c4d-"},
    {"S3_BUCKET_PREFIX": "team.models."},
    {"REQUEST_BUCKET": "abc"},
    {"REQUEST_BUCKET": LONGEST},
    {"STORAGE_BACKEND": "s3", "S3_BUCKET_PREFIX": "p" * 55},
    {"STORAGE_BACKEND": "s3", "S3_BUCKET_PREFIX": "", "REQUEST_BUCKET": LONGEST},
    # The body limit caps uploads too: lowering it alone is fine.
    {"MAX_BODY_BYTES": "4096", "MAX_ARTIFACT_BYTES": "2000000"},
]


@pytest.mark.parametrize("env", GOOD, ids=lambda env: ",".join(f"{k}={v}" for k, v in env.items())[:60])
def test_sensible_values_are_accepted(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"MODELPORT_{name}", value)
    Settings()
    Settings(**{name.lower(): value for name, value in env.items()})  # type: ignore[arg-type]


def test_tokens_the_server_makes_are_accepted() -> None:
    from modelport.control.identity import TOKEN_PREFIX, new_secret

    assert TOKEN_PREFIX == "mp_"
    for _ in range(50):
        assert Settings(bootstrap_token=new_secret()).bootstrap_token is not None


@pytest.mark.parametrize(
    "name",
    ["abc", "requests", "a-b", "a--b", "0models", "r" * 63, "ab", "r" * 64, "Abc", "a_b", "a.b", "-ab", ""],
)
def test_request_bucket_follows_the_stores_rule(name: str) -> None:
    try:
        check_bucket_name(name)
    except InvalidKey:
        with pytest.raises(ValidationError):
            Settings(request_bucket=name)
    else:
        assert Settings(request_bucket=name).request_bucket == name


def test_a_missing_data_dir_that_can_be_made_passes_and_is_not_made(tmp_path: Path) -> None:
    Settings(data_dir=tmp_path).check()
    Settings(data_dir=tmp_path / "a" / "b").check()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("layout", "data_dir", "message"),
    [
        ("file", "file", "exists and is not a directory"),
        ("file", "file/data", "cannot be created: "),
        ("link", "link", "exists and is not a directory"),
    ],
)
def test_a_data_dir_that_cannot_be_a_directory_is_refused(
    tmp_path: Path, layout: str, data_dir: str, message: str
) -> None:
    if layout == "file":
        (tmp_path / "file").write_text("x")
    else:
        (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    settings = Settings(data_dir=tmp_path / data_dir)
    with pytest.raises(ValidationError) as refused:
        settings.check()
    [error] = refused.value.errors()
    assert error["loc"] == ("data_dir",)
    assert message in error["msg"] and str(tmp_path) in error["msg"]


def test_a_data_dir_this_user_cannot_write_is_refused() -> None:
    # /proc/self is a directory nobody may write in, root included, so this holds for any user.
    locked = Path("/proc/self")
    for data_dir, message in ((locked, "is not writable"), (locked / "data", "cannot be created")):
        with pytest.raises(ValidationError) as refused:
            Settings(data_dir=data_dir).check()
        assert message in refused.value.errors()[0]["msg"]
