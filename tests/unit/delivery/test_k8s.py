"""deploy/k8s in step with the code: settings, image, ports, probes, commands and grace periods.

`make lint` validates the rendered overlays against the Kubernetes schemas and checkov; these
tests check what neither knows: that the manifests agree with Settings, the Dockerfile, the
compose file and the routes of the app.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from app.config import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[3]
BASE = ROOT / "deploy" / "k8s" / "base"


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        documents.extend(d for d in yaml.safe_load_all((BASE / resource).read_text()) if d)
    return documents


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in _documents()}


@pytest.fixture(scope="module")
def config(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = objects["ConfigMap", "saas-backend-config"]["data"]
    return data


@pytest.fixture(scope="module")
def secret(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = objects["Secret", "saas-backend-secrets"]["stringData"]
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(obj)["containers"]
    assert len(containers) == 1
    return containers[0]


WORKLOADS = [("Deployment", "saas-api"), ("Deployment", "saas-worker"), ("Job", "saas-migrate")]
SETTINGS = {f"APP_{name.upper()}": field for name, field in Settings.model_fields.items()}


class TestSettings:
    def test_every_required_setting_is_provided(
        self, config: dict[str, str], secret: dict[str, str]
    ) -> None:
        required = {name for name, field in SETTINGS.items() if field.is_required()}
        assert required == {"APP_DATABASE_URL", "APP_REDIS_URL", "APP_JWT_SECRET"}
        assert required <= set(config) | set(secret)

    def test_every_variable_is_a_setting_or_an_otel_one(
        self, config: dict[str, str], secret: dict[str, str]
    ) -> None:
        for name in [*config, *secret]:
            assert name in SETTINGS or name.startswith("OTEL_"), name

    def test_secrets_are_in_the_secret_never_in_the_config_map(
        self, config: dict[str, str], secret: dict[str, str]
    ) -> None:
        secret_like = {
            name
            for name, field in SETTINGS.items()
            if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
        }
        assert "APP_JWT_SECRET" in secret_like
        assert not secret_like & set(config)
        # The URLs carry passwords.
        assert {"APP_DATABASE_URL", "APP_REDIS_URL", "APP_JWT_SECRET"} <= set(secret)

    def test_the_placeholders_cannot_start_production(
        self, config: dict[str, str], secret: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(ROOT / "deploy")  # no stray .env
        for name in list(os.environ):  # only what the manifests provide
            if name.startswith("APP_"):
                monkeypatch.delenv(name)
        values = {
            name.removeprefix("APP_").lower(): value
            for name, value in {**config, **secret}.items()
            if name.startswith("APP_")
        }
        with pytest.raises(SettingsError, match="APP_JWT_SECRET is a placeholder"):
            load_settings(**values)
        values["jwt_secret"] = "Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0sQ"
        settings = load_settings(**values)
        assert settings.is_production
        assert settings.workers == 1

    @pytest.mark.parametrize("kind_name", WORKLOADS)
    def test_every_workload_reads_the_config_and_the_secret(
        self, objects: dict[tuple[str, str], dict[str, Any]], kind_name: tuple[str, str]
    ) -> None:
        pod = _pod(objects[kind_name])
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            refs = {
                next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]
            }
            assert refs == {
                "configMapRef": "saas-backend-config",
                "secretRef": "saas-backend-secrets",
            }


class TestImageAndCommands:
    @pytest.mark.parametrize("kind_name", WORKLOADS)
    def test_one_image_for_every_container(
        self, objects: dict[tuple[str, str], dict[str, Any]], kind_name: tuple[str, str]
    ) -> None:
        pod = _pod(objects[kind_name])
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert container["image"] == "saas-backend"  # kustomize's `images` sets the real one
        kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
        assert [image["name"] for image in kustomization["images"]] == ["saas-backend"]

    def test_commands_match_the_compose_services(
        self, objects: dict[tuple[str, str], dict[str, Any]], compose: dict[str, Any]
    ) -> None:
        # The image's ENTRYPOINT is `saas`; args are its command, like compose's `command`.
        assert _container(objects["Deployment", "saas-api"])["args"] == compose["api"]["command"]
        worker = _container(objects["Deployment", "saas-worker"])
        assert worker["args"] == compose["worker"]["command"]
        assert _container(objects["Job", "saas-migrate"])["args"] == compose["migrate"]["command"]

    @pytest.mark.parametrize("name", ["saas-api", "saas-worker"])
    def test_pods_wait_for_the_schema_of_their_image(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        (init,) = _pod(objects["Deployment", name])["initContainers"]
        assert init["args"][:2] == ["migrate", "--check"]
        assert int(init["args"][init["args"].index("--wait") + 1]) >= 60

    @pytest.mark.parametrize("kind_name", WORKLOADS)
    def test_run_as_the_image_user_read_only_without_privileges(
        self, objects: dict[tuple[str, str], dict[str, Any]], kind_name: tuple[str, str]
    ) -> None:
        user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
        assert user is not None
        pod = _pod(objects[kind_name])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsUser"] == int(user.group(1))
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory"}
            assert set(resources["limits"]) == {"cpu", "memory"}

    @pytest.mark.parametrize("kind_name", WORKLOADS)
    def test_tmp_is_writable_for_the_metrics_files(
        self, objects: dict[tuple[str, str], dict[str, Any]], kind_name: tuple[str, str]
    ) -> None:
        # `saas serve` keeps Prometheus' multiprocess files in a temporary directory.
        pod = _pod(objects[kind_name])
        mounts = {m["mountPath"]: m["name"] for m in _container(objects[kind_name])["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - a path in a manifest


class TestPortsAndProbes:
    def test_the_api_port_agrees_with_the_dockerfile_compose_and_settings(
        self,
        objects: dict[tuple[str, str], dict[str, Any]],
        config: dict[str, str],
        compose: dict[str, Any],
    ) -> None:
        dockerfile = (ROOT / "Dockerfile").read_text()
        exposed = re.search(r"^EXPOSE (\d+)$", dockerfile, re.MULTILINE)
        assert exposed is not None
        port = int(exposed.group(1))
        api = _container(objects["Deployment", "saas-api"])
        assert api["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert int(config["APP_PORT"]) == port
        assert compose["api"]["expose"] == [str(port)]
        service = objects["Service", "saas-api"]["spec"]
        assert service["ports"][0]["targetPort"] == "http"

    def test_probes_use_the_routes_compose_and_the_dockerfile_use(
        self, objects: dict[tuple[str, str], dict[str, Any]], compose: dict[str, Any]
    ) -> None:
        from app.features.health.router import router

        routes = {getattr(route, "path", None) for route in router.routes}
        api = _container(objects["Deployment", "saas-api"])
        assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert {"/ready", "/health"} <= routes
        assert "/health" in " ".join(compose["api"]["healthcheck"]["test"])
        assert "/health" in (ROOT / "Dockerfile").read_text()

    def test_the_worker_metrics_port_agrees_with_config_and_compose(
        self,
        objects: dict[tuple[str, str], dict[str, Any]],
        config: dict[str, str],
        compose: dict[str, Any],
    ) -> None:
        worker = _container(objects["Deployment", "saas-worker"])
        port = int(config["APP_WORKER_METRICS_PORT"])
        assert worker["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        assert int(compose["worker"]["environment"]["APP_WORKER_METRICS_PORT"]) == port
        annotations = objects["Deployment", "saas-worker"]["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert annotations["prometheus.io/port"] == str(port)

    def test_the_worker_liveness_is_its_check_command(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        worker = _container(objects["Deployment", "saas-worker"])
        assert worker["livenessProbe"]["exec"]["command"] == ["saas", "worker", "--check"]


class TestGraceAndScaling:
    def test_the_api_outlives_its_graceful_shutdown(
        self, objects: dict[tuple[str, str], dict[str, Any]], config: dict[str, str]
    ) -> None:
        pod = _pod(objects["Deployment", "saas-api"])
        pause = int(
            _container(objects["Deployment", "saas-api"])["lifecycle"]["preStop"]["exec"][
                "command"
            ][1]
        )
        assert (
            pod["terminationGracePeriodSeconds"]
            > int(config["APP_GRACEFUL_SHUTDOWN_SECONDS"]) + pause
        )

    def test_the_worker_outlives_its_job_grace(
        self, objects: dict[tuple[str, str], dict[str, Any]], config: dict[str, str]
    ) -> None:
        pod = _pod(objects["Deployment", "saas-worker"])
        grace = int(config["APP_WORKER_SHUTDOWN_GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] >= grace + 10

    def test_hpa_pdb_and_service_select_the_api_pods(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        api = objects["Deployment", "saas-api"]
        labels = api["spec"]["template"]["metadata"]["labels"]
        assert "replicas" not in api["spec"]  # the HPA owns it
        hpa = objects["HorizontalPodAutoscaler", "saas-api"]["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "saas-api",
        }
        assert hpa["minReplicas"] >= 2
        for selector in (
            objects["PodDisruptionBudget", "saas-api"]["spec"]["selector"]["matchLabels"],
            objects["Service", "saas-api"]["spec"]["selector"],
            api["spec"]["selector"]["matchLabels"],
        ):
            assert selector.items() <= labels.items()


class TestExposure:
    def test_the_ingress_routes_public_paths_only(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        ingress = objects["Ingress", "saas-api"]
        paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        assert "/metrics" not in paths
        assert "/" not in paths  # a catch-all would route /metrics too
        assert "/api" in paths

    def test_the_ingress_keeps_websockets_open(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        annotations = objects["Ingress", "saas-api"]["metadata"]["annotations"]
        assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600

    def test_network_policies_keep_the_metrics_ports_internal(
        self, objects: dict[tuple[str, str], dict[str, Any]], config: dict[str, str]
    ) -> None:
        deny = objects["NetworkPolicy", "saas-default-deny-ingress"]["spec"]
        assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "saas-backend"}
        assert deny["policyTypes"] == ["Ingress"]
        assert "ingress" not in deny
        api = objects["NetworkPolicy", "saas-api-ingress"]["spec"]["ingress"]
        assert [rule["ports"] for rule in api] == [[{"port": 8000, "protocol": "TCP"}]]
        sources = {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in api[0]["from"]
        }
        assert sources == {"ingress-nginx", "monitoring"}
        worker = objects["NetworkPolicy", "saas-worker-metrics"]["spec"]["ingress"]
        assert worker[0]["ports"] == [
            {"port": int(config["APP_WORKER_METRICS_PORT"]), "protocol": "TCP"}
        ]
        assert [p["namespaceSelector"]["matchLabels"] for p in worker[0]["from"]] == [
            {"kubernetes.io/metadata.name": "monitoring"}
        ]


class TestOverlays:
    @pytest.mark.parametrize("overlay", ["dev", "prod"])
    def test_each_overlay_builds_on_the_base(self, overlay: str) -> None:
        kustomization = yaml.safe_load(
            (ROOT / "deploy" / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        assert kustomization["resources"] == ["../../base"]
        assert kustomization["namespace"]

    def test_prod_pins_the_image_by_digest(self) -> None:
        kustomization = yaml.safe_load(
            (ROOT / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml").read_text()
        )
        (image,) = kustomization["images"]
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"])
