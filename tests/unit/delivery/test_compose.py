"""The delivery files: docker-compose.yml, .env.example, the proxy config and the Dockerfile.

No Docker engine runs the stack here, so these checks guard what would otherwise only break on
a laptop or in CI: a service that starts before its dependencies, an API replica with a fixed
host port (which `--scale` cannot create twice), a setting missing from .env.example.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from app.config import Settings, SettingsError, StorageLocation, load_settings

ROOT = Path(__file__).resolve().parents[3]
APP_SERVICES = ("migrate", "api", "worker")
OBSERVABILITY_SERVICES = {"otel-collector", "jaeger", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def stack(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _env_example_names() -> list[str]:
    """Every APP_* variable of .env.example, set or shown commented out with its default."""
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^(?:# )?(APP_[A-Z0-9_]+)=", text, flags=re.MULTILINE)


class TestServices:
    def test_the_stack_has_every_part(self, stack: dict[str, Any]) -> None:
        assert set(stack) - OBSERVABILITY_SERVICES == {
            "postgres",
            "redis",
            "minio",
            "minio-setup",
            "mailpit",
            "migrate",
            "api",
            "worker",
            "proxy",
        }

    def test_there_is_no_obsolete_version_key(self, compose: dict[str, Any]) -> None:
        assert "version" not in compose

    @pytest.mark.parametrize("name", ["postgres", "redis"])
    def test_datastores_have_a_health_check_and_a_named_volume(
        self, compose: dict[str, Any], stack: dict[str, Any], name: str
    ) -> None:
        service = stack[name]
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}
        volume = service["volumes"][0].split(":")[0]
        assert volume in compose["volumes"]

    def test_postgres_health_check_asks_the_server(self, stack: dict[str, Any]) -> None:
        assert "pg_isready" in " ".join(stack["postgres"]["healthcheck"]["test"])

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_app_services_run_the_one_image(self, stack: dict[str, Any], name: str) -> None:
        assert stack[name]["image"] == stack["api"]["image"]
        assert stack[name]["build"]["context"] == "."

    def test_each_app_service_runs_its_own_command(self, stack: dict[str, Any]) -> None:
        commands = {name: stack[name]["command"] for name in APP_SERVICES}
        assert commands == {"migrate": ["migrate"], "api": ["serve"], "worker": ["worker"]}

    def test_migrate_runs_once_after_postgres_is_healthy(self, stack: dict[str, Any]) -> None:
        migrate = stack["migrate"]
        assert migrate["restart"] == "no"
        assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert migrate["healthcheck"] == {"disable": True}

    @pytest.mark.parametrize("name", ["api", "worker"])
    def test_api_and_worker_wait_for_migrations_and_healthy_datastores(
        self, stack: dict[str, Any], name: str
    ) -> None:
        depends = stack[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}

    def test_the_worker_waits_for_the_mail_sink(self, stack: dict[str, Any]) -> None:
        assert stack["worker"]["depends_on"]["mailpit"] == {"condition": "service_healthy"}

    def test_api_can_be_scaled(self, stack: dict[str, Any]) -> None:
        api = stack["api"]
        # A fixed host port or container name can exist once: `--scale api=3` would fail.
        assert "ports" not in api
        assert "container_name" not in api
        assert api["expose"] == ["8000"]

    def test_api_is_healthy_when_health_answers(self, stack: dict[str, Any]) -> None:
        check = stack["api"]["healthcheck"]
        assert check["test"][0] == "CMD"
        assert "http://127.0.0.1:8000/health" in " ".join(check["test"])

    @pytest.mark.parametrize(
        ("name", "setting"),
        [("api", "graceful_shutdown_seconds"), ("worker", "worker_shutdown_grace_seconds")],
    )
    def test_stop_grace_outlasts_the_graceful_shutdown(
        self, stack: dict[str, Any], name: str, setting: str
    ) -> None:
        # Docker kills a container stop_grace_period after SIGTERM, graceful or not.
        grace = int(stack[name]["stop_grace_period"].removesuffix("s"))
        example = dotenv_values(ROOT / ".env.example").get(f"APP_{setting.upper()}")
        configured = int(example or Settings.model_fields[setting].default)
        assert grace >= configured + 5

    def test_the_worker_has_no_http_health_check(self, stack: dict[str, Any]) -> None:
        assert stack["worker"]["healthcheck"] == {"disable": True}

    def test_the_proxy_is_the_way_in_and_waits_for_a_healthy_api(
        self, stack: dict[str, Any]
    ) -> None:
        proxy = stack["proxy"]
        assert proxy["ports"] == ["${PROXY_PORT:-8080}:8080"]
        assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
        assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
        assert "/health" in " ".join(proxy["healthcheck"]["test"])

    def test_only_the_proxy_and_mailpit_publish_host_ports(self, stack: dict[str, Any]) -> None:
        assert {
            name
            for name, service in stack.items()
            if "ports" in service and name not in OBSERVABILITY_SERVICES
        } == {"proxy", "mailpit"}

    def test_observability_services_are_in_their_profile_only(self, stack: dict[str, Any]) -> None:
        profiled = {name for name, service in stack.items() if "profiles" in service}
        assert profiled == OBSERVABILITY_SERVICES
        for name in OBSERVABILITY_SERVICES:
            assert stack[name]["profiles"] == ["observability"]
            # Their UIs are for the operator on the host, never for the network.
            for port in stack[name].get("ports", []):
                assert port.startswith("127.0.0.1:"), (name, port)

    def test_secrets_are_not_written_in_the_file(self, stack: dict[str, Any]) -> None:
        database_url = stack["api"]["environment"]["APP_DATABASE_URL"]
        assert "${POSTGRES_PASSWORD:?" in database_url
        assert stack["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
            "${POSTGRES_PASSWORD:?"
        )
        assert stack["api"]["env_file"] == "${APP_ENV_FILE:-.env}"
        assert "APP_JWT_SECRET" not in stack["api"]["environment"]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_app_environment_names_real_settings(self, stack: dict[str, Any], name: str) -> None:
        fields = {f"APP_{field.upper()}" for field in Settings.model_fields}
        names = set(stack[name]["environment"])
        # Besides settings only OpenTelemetry's standard variables, read by its SDK.
        assert {n for n in names if not n.startswith("OTEL_")} <= fields


class TestProxyConfig:
    def test_nginx_resolves_the_api_service_at_request_time(self) -> None:
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        # Docker's DNS and a variable upstream: replicas added by --scale join the rotation.
        assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", conf, re.MULTILINE)
        assert "set $api_upstream http://api:8000;" in conf
        assert "proxy_pass $api_upstream;" in conf
        assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf
        assert "listen 8080;" in conf

    def test_nginx_keeps_metrics_and_ready_off_the_public_server(
        self, stack: dict[str, Any]
    ) -> None:
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        public, internal = conf.split("listen 8080;")[1].split("listen 8081;")
        assert "location = /metrics {\n            return 404;" in public
        assert "location = /ready {\n            return 404;" in public
        assert "deny all;" in internal
        assert "allow 0.0.0.0/0" not in internal
        assert "location ~ ^/(ready|metrics)$" in internal
        # The internal port is never published to the host.
        assert not any("8081" in port for port in stack["proxy"]["ports"])


class TestEnvExample:
    def test_lists_every_setting(self) -> None:
        listed = set(_env_example_names())
        missing = {f"APP_{field.upper()}" for field in Settings.model_fields} - listed
        assert not missing, f".env.example lacks {sorted(missing)}"

    def test_lists_nothing_that_is_not_a_setting(self) -> None:
        fields = {f"APP_{field.upper()}" for field in Settings.model_fields}
        assert set(_env_example_names()) <= fields

    def test_lists_each_setting_once(self) -> None:
        names = _env_example_names()
        assert len(names) == len(set(names))

    def test_has_every_variable_the_compose_file_requires(self) -> None:
        compose_text = (ROOT / "docker-compose.yml").read_text()
        required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", compose_text))
        values = dotenv_values(ROOT / ".env.example")
        assert required == {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"}
        assert all(values.get(name) for name in required)

    def test_its_placeholders_cannot_start_production(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)  # no stray .env
        values = {
            key.removeprefix("APP_").lower(): value
            for key, value in dotenv_values(ROOT / ".env.example").items()
            if key.startswith("APP_") and value is not None
        }
        assert values["environment"] == "production"
        with pytest.raises(SettingsError, match="APP_JWT_SECRET is a placeholder"):
            load_settings(
                **values,
                database_url="postgresql+asyncpg://saas:pw@postgres:5432/saas",
                redis_url="redis://redis:6379/0",
                storage_url="s3://media?endpoint=http://minio:9000",
            )

    def test_its_settings_are_valid_apart_from_the_placeholder_secret(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        values = {
            key.removeprefix("APP_").lower(): value
            for key, value in dotenv_values(ROOT / ".env.example").items()
            if key.startswith("APP_") and value is not None
        }
        values["jwt_secret"] = "Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0sQ"
        settings = load_settings(
            **values,
            database_url="postgresql+asyncpg://saas:pw@postgres:5432/saas",
            redis_url="redis://redis:6379/0",
            storage_url="s3://media?endpoint=http://minio:9000",
        )
        assert settings.is_production
        assert settings.workers == 2
        assert "172.16.0.0/12" in settings.trusted_proxies


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


class TestDockerfile:
    def test_installs_only_the_locked_runtime_dependencies(self, dockerfile: str) -> None:
        assert "uv sync --frozen --no-dev --no-install-project" in dockerfile
        assert "uv sync --frozen --no-dev --no-editable" in dockerfile

    def test_runs_as_a_non_root_user(self, dockerfile: str) -> None:
        users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
        assert users == ["10001:10001"]

    def test_checks_health_without_curl(self, dockerfile: str) -> None:
        check = re.search(r"^HEALTHCHECK .*?\n\s+CMD (.*)$", dockerfile, re.MULTILINE)
        assert check is not None
        assert '"python", "-c"' in check.group(1)
        assert "/health" in check.group(1)

    def test_the_runtime_stage_gets_no_uv_or_source(self, dockerfile: str) -> None:
        runtime = dockerfile.split("AS runtime", 1)[1]
        assert "uv" not in re.findall(r"\b\w+\b", runtime.replace("uvicorn", ""))
        assert "COPY src" not in runtime
        assert 'ENTRYPOINT ["saas"]' in runtime
        assert 'CMD ["serve"]' in runtime


class TestObjectStore:
    def test_minio_keeps_its_data_and_answers_its_health_check(
        self, compose: dict[str, Any], stack: dict[str, Any]
    ) -> None:
        minio = stack["minio"]
        assert minio["volumes"][0].split(":")[0] in compose["volumes"]
        assert minio["healthcheck"]["test"][:2] == ["CMD", "mc"]
        assert minio["environment"]["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")

    def test_the_bucket_is_made_once_and_publicly_readable(self, stack: dict[str, Any]) -> None:
        setup = stack["minio-setup"]
        assert setup["restart"] == "no"
        assert setup["depends_on"] == {"minio": {"condition": "service_healthy"}}
        script = " ".join(setup["command"])
        assert "mc mb --ignore-existing" in script
        assert "mc anonymous set download" in script

    @pytest.mark.parametrize("name", ["api", "worker"])
    def test_app_services_wait_for_the_bucket(self, stack: dict[str, Any], name: str) -> None:
        assert stack[name]["depends_on"]["minio-setup"] == {
            "condition": "service_completed_successfully"
        }

    def test_app_services_use_minio_and_the_proxy_serves_its_bucket(
        self, stack: dict[str, Any]
    ) -> None:
        environment = stack["api"]["environment"]
        location = StorageLocation.parse(
            environment["APP_STORAGE_URL"].replace("${MINIO_BUCKET:-media}", "media")
        )
        assert (location.bucket, location.endpoint) == ("media", "http://minio:9000")
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        assert "location /media/" in conf
        assert dotenv_values(ROOT / ".env.example")["APP_MEDIA_BASE_URL"] == (
            "http://localhost:8080/media"
        )
