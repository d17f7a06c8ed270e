from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings, SettingsError, dev_env_file, get_settings, load_settings

STRONG_SECRET = "Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0s"
BASE = {
    "database_url": "postgresql+asyncpg://u@localhost/db",
    "redis_url": "redis://localhost:6379/0",
    "jwt_secret": STRONG_SECRET,
    "storage_url": "s3://media?endpoint=http://localhost:9000",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> None:
    for name in ("APP_DATABASE_URL", "APP_REDIS_URL", "APP_JWT_SECRET", "APP_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


class TestRequiredSettings:
    @pytest.mark.parametrize("missing", ["database_url", "redis_url", "jwt_secret"])
    def test_missing_required_setting_is_named_in_one_line(self, missing: str) -> None:
        values = {key: value for key, value in BASE.items() if key != missing}
        with pytest.raises(SettingsError) as info:
            load_settings(**values)
        message = str(info.value)
        assert f"APP_{missing.upper()} is required" in message
        assert "\n" not in message

    def test_short_jwt_secret_is_refused_without_echoing_it(self) -> None:
        with pytest.raises(SettingsError) as info:
            load_settings(**{**BASE, "jwt_secret": "short-secret-value"})
        assert "APP_JWT_SECRET" in str(info.value)
        assert "short-secret-value" not in str(info.value)

    def test_reads_app_prefixed_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APP_DATABASE_URL", BASE["database_url"])
        monkeypatch.setenv("APP_REDIS_URL", BASE["redis_url"])
        monkeypatch.setenv("APP_JWT_SECRET", STRONG_SECRET)
        monkeypatch.setenv("APP_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2")
        monkeypatch.setenv("APP_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
        settings = Settings()  # type: ignore[call-arg]
        assert settings.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
        assert settings.allowed_origins == ["https://a.example", "https://b.example"]
        assert settings.jwt_secret.get_secret_value() == STRONG_SECRET
        assert STRONG_SECRET not in repr(settings)


class TestProductionSafety:
    @pytest.mark.parametrize(
        "secret",
        ["changeme-changeme-changeme-changeme", "a" * 40, "please-use-an-example-secret-000000"],
    )
    def test_weak_or_placeholder_secret_is_refused(self, secret: str) -> None:
        with pytest.raises(SettingsError, match="APP_JWT_SECRET"):
            load_settings(**{**BASE, "environment": "production", "jwt_secret": secret})

    def test_weak_secret_is_accepted_outside_production(self) -> None:
        settings = load_settings(**{**BASE, "jwt_secret": "a" * 40})
        assert settings.environment == "development"

    def test_wildcard_cors_is_refused(self) -> None:
        with pytest.raises(SettingsError, match="APP_CORS_ORIGINS"):
            load_settings(**{**BASE, "environment": "production", "cors_origins": "*"})

    def test_docs_are_off_unless_asked_for(self) -> None:
        assert load_settings(**{**BASE, "environment": "production"}).show_docs is False
        enabled = load_settings(**{**BASE, "environment": "production", "docs_enabled": True})
        assert enabled.show_docs is True
        assert load_settings(**BASE).show_docs is True

    def test_cors_defaults_to_the_frontend(self) -> None:
        settings = load_settings(**{**BASE, "frontend_url": "https://app.example/"})
        assert settings.allowed_origins == ["https://app.example"]

    def test_logs_are_json_outside_development(self) -> None:
        assert load_settings(**{**BASE, "environment": "production"}).json_logs is True
        assert load_settings(**BASE).json_logs is False
        assert load_settings(**{**BASE, "log_format": "json"}).json_logs is True


class TestStorageSettings:
    def test_storage_url_is_required_outside_development(self) -> None:
        values = {key: value for key, value in BASE.items() if key != "storage_url"}
        assert load_settings(**values).storage_url is None  # development
        with pytest.raises(SettingsError, match="APP_STORAGE_URL is required"):
            load_settings(**{**values, "environment": "staging"})

    @pytest.mark.parametrize(
        "url",
        [
            "https://bucket",
            "s3://",
            "s3://bucket/some/path",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?endpont=http://typo",
        ],
    )
    def test_malformed_storage_url_is_refused(self, url: str) -> None:
        with pytest.raises(SettingsError, match="APP_STORAGE_URL"):
            load_settings(**{**BASE, "storage_url": url})

    def test_media_base_url_defaults_to_the_bucket_path_on_an_endpoint(self) -> None:
        settings = load_settings(
            **{**BASE, "storage_url": "s3://media?endpoint=http://minio:9000/&region=eu-west-1"}
        )
        assert settings.public_media_base_url == "http://minio:9000/media"

    def test_media_base_url_defaults_to_the_aws_bucket_host(self) -> None:
        settings = load_settings(**{**BASE, "storage_url": "s3://shop-media?region=eu-west-1"})
        assert settings.public_media_base_url == "https://shop-media.s3.eu-west-1.amazonaws.com"
        assert (
            load_settings(**{**BASE, "storage_url": "s3://m"}).public_media_base_url
            == "https://m.s3.us-east-1.amazonaws.com"
        )

    def test_media_base_url_setting_wins(self) -> None:
        settings = load_settings(**{**BASE, "media_base_url": "https://cdn.example.com/"})
        assert settings.public_media_base_url == "https://cdn.example.com"


class TestDevEnv:
    """`.data/dev.env`, written by a running `saas dev`, is read by the commands run beside
    it, but never over what the environment or `.env` say, and never outside development."""

    DEV_DATABASE = "postgresql+asyncpg://postgres@/postgres?host=/tmp/saas-dev"

    @pytest.fixture(autouse=True)
    def _dev_env(self, tmp_path: Path) -> Iterator[None]:
        (tmp_path / ".data").mkdir()
        (tmp_path / ".data" / "dev.env").write_text(
            f"APP_DATABASE_URL='{self.DEV_DATABASE}'\n"
            "APP_REDIS_URL='redis://127.0.0.1:6390/0'\n"
            f"APP_JWT_SECRET='{STRONG_SECRET}'\n"
            "APP_LOG_LEVEL='DEBUG'\n"
        )
        get_settings.cache_clear()
        yield
        get_settings.cache_clear()

    def test_it_is_read_when_nothing_names_a_database(self) -> None:
        assert dev_env_file() == Path(".data/dev.env")
        settings = get_settings()
        assert settings.database_url == self.DEV_DATABASE
        assert settings.redis_url == "redis://127.0.0.1:6390/0"

    def test_dotenv_and_the_environment_win_over_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / ".env").write_text("APP_LOG_LEVEL=WARNING\n")
        monkeypatch.setenv("APP_REDIS_URL", "redis://127.0.0.1:6391/0")
        settings = get_settings()
        assert settings.log_level == "WARNING"
        assert settings.redis_url == "redis://127.0.0.1:6391/0"
        assert settings.database_url == self.DEV_DATABASE

    def test_a_database_in_the_environment_turns_it_off(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APP_DATABASE_URL", BASE["database_url"])
        assert dev_env_file() is None
        with pytest.raises(SettingsError, match="APP_REDIS_URL is required"):
            get_settings()

    def test_a_database_in_dotenv_turns_it_off(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text(f"APP_DATABASE_URL={BASE['database_url']}\n")
        assert dev_env_file() is None

    def test_another_environment_turns_it_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APP_ENVIRONMENT", "production")
        assert dev_env_file() is None

    def test_no_file_no_dev_env(self, tmp_path: Path) -> None:
        (tmp_path / ".data" / "dev.env").unlink()
        assert dev_env_file() is None
