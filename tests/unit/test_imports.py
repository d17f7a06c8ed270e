"""What an API worker imports to serve (issue 19): nothing of the CLI, the dev servers, the
worker, the tests or the benchmark, and no library that only another process or an optional
feature uses. Each module costs its RSS in every worker for the life of the process.

Each check runs in a fresh interpreter, as a worker starts: `import app.main`, then the app built
with production settings (docs off, JSON logs, tracing off).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

# Taken out of the serving path (issue 19), with what they cost a worker at start-up
# (`python -m bench.memory imports`): each must stay out.
REMOVED = [
    # Jinja2 renders emails in the worker; the API loads it at its first queued email
    # (`check_template`), not at start-up: 1.2 MB, 25 modules with fastapi-offline.
    "jinja2",
    "markupsafe",
    # The docs' assets, served only when the docs are on.
    "fastapi_offline",
    "fastapi.staticfiles",
]

# Never imported by a serving worker (already so before issue 19; kept that way).
NEVER = [
    "app.cli",
    "app.dev",
    "app.entry",
    "app.worker",
    "bench",
    "tests",
    "pytest",
    "alembic",
    "typer",
    "shellingham",
    "aiosmtplib",
    "aiobotocore",
    "botocore",
    "PIL",
    "sentry_sdk",
    "httpx",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
]

_WORKER = textwrap.dedent(
    """
    import json, sys
    from app.config import load_settings
    import app.main
    settings = load_settings(
        environment="production",
        database_url="postgresql+asyncpg://u@127.0.0.1:1/none",  # never connected
        redis_url="redis://127.0.0.1:1/0",
        jwt_secret=JWT_SECRET,
        log_format="json",
        storage_url="s3://media?endpoint=http://127.0.0.1:1",
        **OVERRIDES,
    )
    app.main.create_app(settings)
    print(json.dumps(sorted(sys.modules)))
    """
)


def _loaded(**overrides: object) -> set[str]:
    """The modules of a fresh interpreter once it has imported `app.main` and built the app."""
    code = f"JWT_SECRET = {secrets.token_urlsafe(48)!r}\nOVERRIDES = {overrides!r}\n" + _WORKER
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def _present(loaded: set[str], names: list[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in loaded)]


@pytest.fixture(scope="module")
def production() -> set[str]:
    return _loaded()


def test_a_production_worker_imports_none_of_what_was_taken_out(production: set[str]) -> None:
    assert _present(production, REMOVED) == []


def test_a_production_worker_imports_no_tooling_and_no_optional_backend(
    production: set[str],
) -> None:
    assert _present(production, NEVER) == []


def test_the_check_sees_an_import_when_there_is_one(production: set[str]) -> None:
    """The same check on an app with its docs on finds their assets' package: it can fail."""
    assert "app.main" in production
    assert _present(_loaded(docs_enabled=True), ["fastapi_offline"]) == ["fastapi_offline"]
