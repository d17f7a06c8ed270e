"""Application settings: the only place that reads the environment.

Every variable is `APP_<FIELD>` (or a line of `.env`). Required secrets have no default, and
`load_settings()` turns a missing or invalid one into a one-line `SettingsError` that names the
variable, so that a misconfigured process stops at once with a message an operator can act on.

While `saas dev` runs, it writes the settings of its embedded servers to `.data/dev.env`;
`get_settings()` reads that file too (below `.env` and the environment), so that `saas migrate`,
`saas create-admin` or `alembic` in a second terminal reach the same servers. It is read only
when neither the environment nor `.env` names a database or another environment than
development, so it never leaks into a real deployment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "staging", "production"]

# Secrets that appear in docs, examples and tutorials; production refuses them outright.
_PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "your-secret-key",
        "supersecret",
        "please-change-me",
        "dev",
        "development",
        "test",
        "password",
    }
)
_PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "example", "placeholder", "insecure")


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota.

    `os.cpu_count()` reports the host's CPUs, so a container limited to 2 CPUs on a 64-core host
    would start 64 server processes; the quota (`docker run --cpus`, Kubernetes limits) is the
    number that matters.
    """
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0)) or 1
    else:  # pragma: no cover - macOS and Windows have no affinity call
        count = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        limit = math.ceil(int(quota) / int(period))  # "max 100000" (no quota) raises too
    except (OSError, ValueError, ZeroDivisionError):
        return count
    return min(count, max(1, limit))


DEFAULT_STORAGE_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """Where the bucket is: parsed from `APP_STORAGE_URL`."""

    bucket: str
    endpoint: str | None
    region: str

    @classmethod
    def parse(cls, url: str) -> StorageLocation:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("must look like s3://bucket?endpoint=https://...&region=...")
        query = parse_qs(parts.query)
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(sorted(unknown))}")
        endpoint = query.get("endpoint", [None])[-1]
        if endpoint is not None:
            scheme = urlsplit(endpoint).scheme
            if scheme not in ("http", "https"):
                raise ValueError("endpoint must be an http(s) URL")
            endpoint = endpoint.rstrip("/")
        region = query.get("region", [DEFAULT_STORAGE_REGION])[-1] or DEFAULT_STORAGE_REGION
        return cls(bucket=parts.netloc, endpoint=endpoint, region=region)

    def default_media_base_url(self) -> str:
        """Path style on a given endpoint, else the bucket's own AWS host (API.md)."""
        if self.endpoint:
            return f"{self.endpoint}/{self.bucket}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com"


class SettingsError(Exception):
    """The configuration cannot start the application; the message is one line."""


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


@lru_cache(maxsize=8)
def _default_media_base_url(storage_url: str) -> str:
    # Every product read builds its image URLs from this: parsed once per URL, not per request
    # (3.5% of a cached product read's CPU under a sampling profiler).
    return StorageLocation.parse(storage_url).default_media_base_url()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APP_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    environment: Environment = "development"

    # Services
    database_url: str = Field(min_length=1)
    redis_url: str = Field(min_length=1)
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    db_echo: bool = False
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    ready_timeout_seconds: float = Field(default=2.0, gt=0)

    # Security
    jwt_secret: SecretStr = Field(min_length=32)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "saas-backend"
    jwt_audience: str = "saas-backend-api"
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=1)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    # A rotated refresh token presented again within this many seconds gets the successor pair
    # that was already issued (two tabs refreshing at once), not a revoked session. 0: off.
    refresh_reuse_grace_seconds: float = Field(default=5.0, ge=0, le=60)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str] | None, NoDecode] = None
    rate_limit_enabled: bool = True
    # Per client IP (`limits` notation: "10/minute", "100/hour", "5 per 30 seconds").
    rate_limit_login: str = "10/minute"  # /auth/login and /auth/token share this bucket
    rate_limit_register: str = "5/minute"
    rate_limit_forgot_password: str = "3/minute"  # noqa: S105 - a rate, not a password
    rate_limit_verify_resend: str = "3/minute"
    rate_limit_refresh: str = "30/minute"
    # Failed logins per normalized email, whatever the IP; a successful login clears it.
    rate_limit_failed_logins: str = "20/hour"
    # Per API key, whatever the IP (API.md: Organizations).
    rate_limit_api_key: str = "600/minute"
    verify_email_token_ttl_seconds: int = Field(default=48 * 3600, ge=60)
    reset_password_token_ttl_seconds: int = Field(default=3600, ge=60)
    # argon2id; the default is OWASP's minimum (19 MiB, t=2, p=1): ~23 ms per verify here.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8 * 1024)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes in flight at once; each holds its memory and a core.
    password_hash_concurrency: int = Field(default_factory=lambda: available_cpus(), ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)

    # Mail
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    mail_from: str = "no-reply@example.com"
    frontend_url: str = "http://localhost:5173"
    # Transient SMTP failures are retried: 10 s, 20 s, 40 s... at most 30 min apart, until the
    # deadline after the first try (the last retry on it). Only a 5xx refusal ends it sooner.
    email_retry_backoff_seconds: float = Field(default=10.0, ge=0)
    email_retry_max_backoff_seconds: float = Field(default=1800.0, gt=0)
    # At most 7 days: ARQ keeps a queued job (and so its retries) for 8 (app.core.jobs).
    email_retry_deadline_hours: float = Field(default=48.0, gt=0, le=7 * 24)

    # Background jobs (the outbox and its relay, the worker)
    outbox_relay_interval_seconds: int = Field(default=5, ge=1, le=60)
    outbox_relay_batch_size: int = Field(default=100, ge=1, le=10_000)
    outbox_retention_hours: float = Field(default=168.0, gt=0)
    worker_shutdown_grace_seconds: int = Field(default=20, ge=0)
    # The worker's own Prometheus endpoint (`/metrics` on APP_HOST:this port); 0 = none.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    # Observability: traces (OpenTelemetry, configured by the standard OTEL_* variables) and
    # error reports (Sentry). Both off by default; off loads none of their code.
    otel_enabled: bool = False
    sentry_dsn: SecretStr | None = None
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    # Real-time events (features/events): the Redis Streams they are kept in, the connections
    # that carry them. Each stream keeps at least `events_retention_seconds` of history, cut
    # further only by the per-stream cap `events_stream_max_length` (an operator's choice).
    events_retention_seconds: int = Field(default=3600, ge=3600)
    events_stream_max_length: int = Field(default=100_000, ge=1000)
    # WebSocket ping frames and SSE comment lines at least this often (API.md: <= 25 s).
    events_heartbeat_seconds: float = Field(default=20.0, gt=0, le=25)
    # Live events queued behind one connection before it is dropped as too slow (1008).
    events_queue_limit: int = Field(default=1000, ge=1)
    # How often each process looks what changed for its connections (`users.liveness.
    # access_changes`) and acts on it: a revoked session or a member who left stops receiving
    # within this + 1 s. Each connection is also re-read at least every
    # `events_full_recheck_seconds`, a slice per look, whatever happened (a change made
    # without the marks).
    events_recheck_seconds: float = Field(default=2.0, gt=0, le=4)
    events_full_recheck_seconds: float = Field(default=30.0, gt=0, le=300)
    events_auth_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    # The relay of events whose after-commit publication did not happen (crash, Redis blip).
    events_relay_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    # Object storage for product images (S3-compatible): s3://bucket?endpoint=...&region=...
    storage_url: str | None = None
    storage_access_key: str | None = None
    storage_secret_key: SecretStr | None = None
    storage_timeout_seconds: float = Field(default=10.0, gt=0)
    # Public base of image URLs; by default the bucket itself (see core/storage.py).
    media_base_url: str | None = None
    image_max_tries: int = Field(default=5, ge=1, le=25)

    # Presentation and business
    docs_enabled: bool | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    require_verified_email: bool = False
    cache_ttl_seconds: int = Field(default=60, ge=1)
    # 0: public catalog reads say `Cache-Control: public, no-cache` (revalidate on every use, so
    # a write is seen at once); N > 0: `public, max-age=N` for a CDN that may serve N s stale.
    catalog_max_age_seconds: int = Field(default=0, ge=0)

    # `saas serve`
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default_factory=lambda: available_cpus(), ge=1)
    graceful_shutdown_seconds: int = Field(default=20, ge=1)

    @field_validator("trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator(
        "rate_limit_login",
        "rate_limit_register",
        "rate_limit_forgot_password",
        "rate_limit_verify_resend",
        "rate_limit_refresh",
        "rate_limit_failed_logins",
        "rate_limit_api_key",
    )
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            if len(parse_many(value)) != 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"{value!r} is not one rate limit such as '10/minute'") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("storage_url")
    @classmethod
    def _parse_storage_url(cls, value: str | None) -> str | None:
        if value:
            StorageLocation.parse(value)
        return value or None

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != "production":
            return self
        secret = self.jwt_secret.get_secret_value()
        lowered = secret.lower()
        if (
            lowered in _PLACEHOLDER_SECRETS
            or any(marker in lowered for marker in _PLACEHOLDER_MARKERS)
            or len(set(secret)) < 10
        ):
            raise ValueError(
                "APP_JWT_SECRET is a placeholder or too weak for production "
                "(use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if "*" in self.allowed_origins:
            raise ValueError("APP_CORS_ORIGINS must not contain '*' in production")
        return self

    @model_validator(mode="after")
    def _require_storage(self) -> Settings:
        # `saas dev` starts an embedded store; everywhere else the operator names one.
        if self.environment != "development" and not self.storage_url:
            raise ValueError("APP_STORAGE_URL is required outside development")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def show_docs(self) -> bool:
        return self.docs_enabled if self.docs_enabled is not None else not self.is_production

    @property
    def json_logs(self) -> bool:
        if self.log_format is not None:
            return self.log_format == "json"
        return self.environment != "development"

    @property
    def public_media_base_url(self) -> str:
        """`APP_MEDIA_BASE_URL`, or by default the bucket itself (API.md, Configuration)."""
        if self.media_base_url:
            return self.media_base_url.rstrip("/")
        if self.storage_url:
            return _default_media_base_url(self.storage_url)
        return ""

    @property
    def allowed_origins(self) -> list[str]:
        if self.cors_origins is not None:
            return self.cors_origins
        return [self.frontend_url.rstrip("/")]


def _describe(error: ValidationError) -> str:
    """One line naming each offending variable, never echoing its value (it may be a secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item["loc"] if part != "__root__"]
        if loc:
            name = "APP_" + loc[0].upper()
            message = "is required" if item["type"] == "missing" else item["msg"]
            problems.append(f"{name} {message}")
        else:
            problems.append(item["msg"].removeprefix("Value error, "))
    return "invalid configuration: " + "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (and overrides) or raise a one-line SettingsError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


DEV_ENV_FILE = Path(".data") / "dev.env"


def dev_env_file() -> Path | None:
    """`.data/dev.env` of a running `saas dev`, when it applies: the file exists, and neither
    the environment nor `.env` sets `APP_DATABASE_URL` or a non-development environment."""
    if not DEV_ENV_FILE.is_file():
        return None
    from dotenv import dotenv_values

    configured = {**dotenv_values(".env"), **os.environ} if Path(".env").is_file() else os.environ
    if configured.get("APP_DATABASE_URL"):
        return None
    if (configured.get("APP_ENVIRONMENT") or "development") != "development":
        return None
    return DEV_ENV_FILE


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once (with `.data/dev.env`, see `dev_env_file`)."""
    dev_env = dev_env_file()
    if dev_env is None:
        return load_settings()
    # Later files win: .env over dev.env; the environment over both.
    return load_settings(_env_file=(dev_env, ".env"))
