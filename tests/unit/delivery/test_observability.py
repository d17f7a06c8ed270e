"""deploy/observability: the alert rules fire on the series they watch, the dashboard and the
Prometheus config refer to real metrics, and the compose profile mounts what they need.

`promtool` (Debian's `prometheus` package; `make lint` installs it) runs the rule tests. Without
it the tests that need it are skipped, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "saas-backend.json"

ALERTS = {
    "ApiHighErrorRatio",
    "ApiHighLatencyP99",
    "ApiNotReady",
    "ApiDown",
    "DbPoolSaturated",
    "WorkerNotReporting",
    "OutboxLagHigh",
    "JobQueueBacklog",
    "EmailFailureRatio",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: `make lint` installs Debian's prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    return exprs


class TestAlertRules:
    def test_every_alert_the_on_call_needs_is_defined(self) -> None:
        assert {rule["alert"] for rule in _rules()} == ALERTS

    def test_every_alert_has_a_severity_a_summary_and_a_runbook(self) -> None:
        docs = (ROOT / "docs" / "observability.md").read_text().lower()
        for rule in _rules():
            assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
            assert rule["annotations"]["summary"]
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert anchor == rule["alert"].lower()
            assert f"### {rule['alert'].lower()}" in docs, f"no runbook for {rule['alert']}"

    def test_promtool_accepts_the_rules(self) -> None:
        result = subprocess.run(
            [_promtool(), "check", "rules", str(OBSERVABILITY / "alerts.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout

    def test_each_alert_fires_on_its_sample_series(self) -> None:
        result = subprocess.run(
            [_promtool(), "test", "rules", "alerts.test.yml"],
            cwd=OBSERVABILITY,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout
        tests = yaml.safe_load((OBSERVABILITY / "alerts.test.yml").read_text())["tests"]
        fired = {
            case["alertname"]
            for test in tests
            for case in test["alert_rule_test"]
            if case["exp_alerts"]
        }
        assert fired == ALERTS

    def test_promtool_catches_a_wrong_expectation(self, tmp_path: Path) -> None:
        # The rule tests can fail: the same file with one threshold expectation flipped.
        text = (OBSERVABILITY / "alerts.test.yml").read_text()
        broken = text.replace(
            "        alertname: ApiHighErrorRatio\n        exp_alerts: []\n      - eval_time: 12m",
            "        alertname: ApiHighErrorRatio\n        exp_alerts: [{exp_labels: {severity: page}}]\n      - eval_time: 12m",  # noqa: E501
            1,
        )
        assert broken != text
        (tmp_path / "alerts.yml").write_text((OBSERVABILITY / "alerts.yml").read_text())
        (tmp_path / "alerts.test.yml").write_text(broken)
        result = subprocess.run(
            [_promtool(), "test", "rules", "alerts.test.yml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert "FAILED" in result.stdout + result.stderr


class TestDashboard:
    def test_is_provisioned_from_files_with_the_prometheus_datasource(self) -> None:
        provider = yaml.safe_load(
            (
                OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
            ).read_text()
        )
        assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
        sources = yaml.safe_load(
            (
                OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
            ).read_text()
        )
        uids = {source["uid"] for source in sources["datasources"]}
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, panel["title"]

    def test_covers_red_per_route_worker_outbox_email_db_and_redis(self) -> None:
        text = " ".join(_dashboard_exprs())
        for metric in (
            "http_requests_total",
            "http_request_duration_seconds_bucket",
            "outbox_oldest_unsent_age_seconds",
            "outbox_unsent_rows",
            "arq_queue_depth",
            "email_deliveries_total",
            "db_pool_connections_in_use",
            "db_pool_waits_total",
            "cache_lookups_total",
            "rate_limit_rejections_total",
            "worker_heartbeat_timestamp_seconds",
        ):
            assert metric in text, metric
        assert "by (route" in text

    def test_panel_ids_are_unique(self) -> None:
        ids = [panel["id"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
        assert len(ids) == len(set(ids))

    def test_every_query_is_valid_promql(self, tmp_path: Path) -> None:
        # Grafana's variables replaced by what they expand to, each query as a recording rule.
        rules = [
            {
                "record": f"dashboard:query_{number}",
                "expr": expr.replace("$__rate_interval", "5m").replace("$route", ".*"),
            }
            for number, expr in enumerate(_dashboard_exprs())
        ]
        path = tmp_path / "queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = subprocess.run(
            [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestPrometheusConfig:
    def test_scrapes_the_api_and_the_worker_on_their_ports(self) -> None:
        config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert jobs["saas-api"]["dns_sd_configs"][0] == {
            "names": ["api"],
            "type": "A",
            "port": 8000,
            "refresh_interval": "15s",
        }
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        worker_port = int(compose["worker"]["environment"]["APP_WORKER_METRICS_PORT"])
        assert jobs["saas-worker"]["dns_sd_configs"][0]["port"] == worker_port
        assert str(worker_port) in compose["worker"]["expose"]
        assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]

    def test_the_compose_profile_mounts_the_files(self) -> None:
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        mounts = [
            volume.split(":")[0]
            for name in ("prometheus", "grafana", "otel-collector")
            for volume in compose[name]["volumes"]
            if volume.startswith("./")
        ]
        for mount in mounts:
            assert (ROOT / mount).exists(), mount
        assert (
            "./deploy/observability/alerts.yml:/etc/prometheus/alerts.yml:ro"
            in compose["prometheus"]["volumes"]
        )

    def test_the_app_sends_spans_to_the_collector_of_the_profile(self) -> None:
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        collector = yaml.safe_load((OBSERVABILITY / "otel-collector.yml").read_text())
        assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
        for name in ("api", "worker"):
            endpoint = compose[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
            assert endpoint == "${OTEL_EXPORTER_OTLP_ENDPOINT:-http://otel-collector:4318}"
        assert compose["api"]["environment"]["OTEL_SERVICE_NAME"] == "saas-api"
        assert compose["worker"]["environment"]["OTEL_SERVICE_NAME"] == "saas-worker"
