"""`available_cpus`: the default of APP_WORKERS and the hashing concurrency in a container."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config import available_cpus, load_settings

AFFINITY = len(os.sched_getaffinity(0))


def _cpu_max(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


class TestAvailableCpus:
    def test_without_a_cgroup_file_it_is_the_affinity(self, tmp_path: Path) -> None:
        assert available_cpus(tmp_path / "missing") == AFFINITY

    def test_an_unlimited_quota_leaves_the_affinity(self, tmp_path: Path) -> None:
        assert available_cpus(_cpu_max(tmp_path, "max 100000\n")) == AFFINITY

    def test_a_quota_below_the_affinity_caps_it(self, tmp_path: Path) -> None:
        assert available_cpus(_cpu_max(tmp_path, "100000 100000\n")) == 1

    def test_a_fractional_quota_rounds_up_and_never_reaches_zero(self, tmp_path: Path) -> None:
        assert available_cpus(_cpu_max(tmp_path, "50000 100000\n")) == 1
        assert available_cpus(_cpu_max(tmp_path, "150000 100000\n")) == min(AFFINITY, 2)

    def test_a_quota_above_the_affinity_does_not_raise_it(self, tmp_path: Path) -> None:
        assert available_cpus(_cpu_max(tmp_path, "6400000 100000\n")) == AFFINITY

    @pytest.mark.parametrize("text", ["", "garbage", "100000 0"])
    def test_an_unreadable_file_is_ignored(self, tmp_path: Path, text: str) -> None:
        assert available_cpus(_cpu_max(tmp_path, text)) == AFFINITY

    def test_settings_default_workers_to_it(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.delenv("APP_WORKERS", raising=False)
        monkeypatch.chdir(tmp_path)
        settings = load_settings(
            database_url="postgresql+asyncpg://u@localhost/db",
            redis_url="redis://localhost:6379/0",
            jwt_secret="x" * 40,
        )
        assert settings.workers == available_cpus()
