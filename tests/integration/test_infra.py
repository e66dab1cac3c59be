"""The scale-out files, validated offline (no container engine or cluster can run here):
infra/docker-compose.yml against the compose-spec JSON schema (check-jsonschema's vendored copy),
its Prometheus and Alertmanager configurations with promtool and amtool, the Dockerfiles with
hadolint, and every kustomize overlay rendered by `kubectl kustomize` and checked against the
Kubernetes schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
INFRA = PROJECT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
BIN = Path(sys.executable).parent
K8S_TARGETS = [INFRA / "k8s" / "base", INFRA / "k8s" / "overlays" / "production"]
ONE_SHOTS = {"state-permissions", "minio-bucket"}


def run(*command: str | Path, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False
    )


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_file_is_valid_against_the_compose_spec_schema(tmp_path: Path) -> None:
    checked = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The same check rejects a broken file: it is not a check that passes anything.
    broken = compose()
    broken["services"]["monitor"]["healthcheck"]["interval"] = ["10s"]
    broken["services"]["worker"]["restart_policy"] = "always"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    rejected = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", bad)
    assert rejected.returncode == 1 and "restart_policy" in rejected.stdout


def test_compose_has_every_component_with_healthchecks_and_no_secrets() -> None:
    services = compose()["services"]
    assert {
        "postgres",
        "minio",
        "lakefs",
        "prefect-server",
        "worker",
        "inference",
        "monitor",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    for name, service in services.items():
        if name not in ONE_SHOTS:
            assert "healthcheck" in service, f"{name} has no healthcheck"
    # Every secret-looking value is a reference to infra/.env, never a literal.
    text = COMPOSE.read_text()
    for key, value in re.findall(r"^\s*([A-Z0-9_]+): (.+)$", text, flags=re.MULTILINE):
        if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", key):
            assert "${" in value, f"{key} has a literal value in the compose file"
    # Every variable the file reads is in the example env file, and nothing else is needed.
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text)) | {"ALERT_TOKEN"}
    example = (INFRA / "compose.env.example").read_text()
    listed = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert used == listed
    for name, value in re.findall(r"^([A-Z0-9_]+)=(.*)$", example, flags=re.MULTILINE):
        if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", name):
            assert value == "", f"the example env file carries a value for {name}"
    # Mounted files and Dockerfiles exist.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            build = service["build"]
            assert (INFRA / build["context"] / build["dockerfile"]).is_file()
    # The project every driftloop container reads: mounted at DRIFTLOOP_PROJECT, by default an
    # example project that exists.
    default_project = "${PROJECT_DIR:-../examples/transactions}:/project:ro"
    for name in ("worker", "inference", "monitor"):
        assert default_project in services[name]["volumes"], name
        assert services[name]["environment"]["DRIFTLOOP_PROJECT"] == "/project", name
    assert (INFRA / "../examples/transactions/driftloop.yaml").is_file()


def test_compose_prometheus_and_alertmanager_match_the_local_configuration(
    tmp_path: Path,
) -> None:
    local = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    composed = yaml.safe_load((INFRA / "compose" / "prometheus.yml").read_text())

    def jobs(config: dict[str, Any]) -> dict[str, str]:
        return {j["job_name"]: j.get("metrics_path", "/metrics") for j in config["scrape_configs"]}

    assert jobs(composed) == jobs(local)
    assert composed["rule_files"] == local["rule_files"]
    targets = [t for j in composed["scrape_configs"] for t in j["static_configs"][0]["targets"]]
    assert targets == ["inference:3000", "monitor:8001", "prefect-server:4200"]
    # promtool reads it the way the container does: rules beside it.
    shutil.copy(INFRA / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(INFRA / "prometheus" / "rules", tmp_path / "rules")
    checked = run("promtool", "check", "config", tmp_path / "prometheus.yml")
    assert checked.returncode == 0 and "10 rules found" in checked.stdout, checked.stderr

    local_am = yaml.safe_load((INFRA / "alertmanager" / "alertmanager.yml").read_text())
    composed_am = yaml.safe_load((INFRA / "compose" / "alertmanager.yml").read_text())
    webhook = composed_am["receivers"][1]["webhook_configs"][0]
    assert webhook["url"] == "http://monitor:8001/alerts"
    assert webhook["http_config"]["authorization"]["credentials_file"] == (
        "/run/secrets/alert_token"
    )
    local_webhook = local_am["receivers"][1]["webhook_configs"][0]
    local_webhook["url"] = webhook["url"]
    local_webhook["http_config"]["authorization"]["credentials_file"] = "/run/secrets/alert_token"
    assert composed_am == local_am
    checked = run("amtool", "check-config", INFRA / "compose" / "alertmanager.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("dockerfile", ["worker.Dockerfile", "monitor.Dockerfile"])
def test_dockerfiles_pass_hadolint_and_copy_what_exists(dockerfile: str) -> None:
    path = INFRA / "docker" / dockerfile
    linted = run(BIN / "hadolint", "--no-color", path)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    for line in path.read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (PROJECT / source).exists(), f"{dockerfile} copies missing {source}"


def render(target: Path) -> list[dict[str, Any]]:
    rendered = run("kubectl", "kustomize", target)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.mark.parametrize("target", K8S_TARGETS, ids=lambda p: p.name)
def test_kustomize_renders_and_passes_the_kubernetes_schemas(target: Path, tmp_path: Path) -> None:
    documents = render(target)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    validated = run(BIN / "kubernetes-validate", "--strict", "--quiet", manifest)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    # The validator is strict: an unknown field in a container fails it.
    broken = [dict(doc) for doc in documents]
    deployment = next(doc for doc in broken if doc["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["healthCheck"] = {"path": "/"}
    manifest.write_text(yaml.safe_dump_all(broken))
    assert run(BIN / "kubernetes-validate", "--strict", "--quiet", manifest).returncode != 0


@pytest.mark.parametrize("target", K8S_TARGETS, ids=lambda p: p.name)
def test_kubernetes_workloads_have_probes_resources_and_secret_references(target: Path) -> None:
    documents = render(target)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    for name in ("prefect-server", "prefect-worker", "inference", "monitor"):
        assert ("Deployment", name) in kinds
    for name in ("prefect-server", "inference", "monitor"):
        assert ("Service", name) in kinds
    assert not any(doc["kind"] == "Secret" for doc in documents)  # referenced, never written
    assert any(doc["kind"] == "ConfigMap" for doc in documents)
    for doc in documents:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container or "readinessProbe" in container, where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"]["memory"], where
            for variable in container.get("env", []):
                assert "value" not in variable or not re.search(
                    r"KEY|SECRET|TOKEN|PASSWORD|DATABASE_URL|LOG_URL", variable["name"]
                ), f"{where}: {variable['name']} is a literal"
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "driftloop-secrets", where
    hpa = next(doc for doc in documents if doc["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "inference",
    }
    assert hpa["spec"]["minReplicas"] >= 2


PREFECT_AUTH = ("DRIFTLOOP_PREFECT__AUTH_STRING", "PREFECT_API_AUTH_STRING")


def test_compose_puts_prefect_behind_basic_auth_for_its_clients_only() -> None:
    services = compose()["services"]
    server = services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert server == "driftloop:${PREFECT_AUTH_PASSWORD:?set PREFECT_AUTH_PASSWORD in infra/.env}"
    for name in ("worker", "monitor"):
        environment = services[name]["environment"]
        assert all(environment[variable] == server for variable in PREFECT_AUTH), name
    assert not set(PREFECT_AUTH) & set(services["inference"]["environment"])
    # Prometheus signs its scrape of Prefect with the same password, from a compose secret.
    assert services["prometheus"]["secrets"] == ["prefect_auth_password"]
    assert compose()["secrets"]["prefect_auth_password"] == {"environment": "PREFECT_AUTH_PASSWORD"}
    composed = yaml.safe_load((INFRA / "compose" / "prometheus.yml").read_text())
    prefect = next(j for j in composed["scrape_configs"] if j["job_name"] == "prefect")
    assert prefect["basic_auth"] == {
        "username": "driftloop",
        "password_file": "/run/secrets/prefect_auth_password",
    }


@pytest.mark.parametrize("target", K8S_TARGETS, ids=lambda p: p.name)
def test_kubernetes_puts_prefect_behind_basic_auth_for_its_clients_only(target: Path) -> None:
    def secret_keys(name: str) -> dict[str, str]:
        deployment = next(
            doc
            for doc in render(target)
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {
            variable["name"]: variable["valueFrom"]["secretKeyRef"]["key"]
            for variable in container.get("env", [])
            if "secretKeyRef" in variable.get("valueFrom", {})
        }

    assert secret_keys("prefect-server")["PREFECT_SERVER_API_AUTH_STRING"] == "prefect-auth-string"
    assert secret_keys("prefect-worker")["PREFECT_API_AUTH_STRING"] == "prefect-auth-string"
    for name in ("prefect-worker", "monitor"):
        assert secret_keys(name)["DRIFTLOOP_PREFECT__AUTH_STRING"] == "prefect-auth-string"
    assert not set(PREFECT_AUTH) & set(secret_keys("inference"))


DATABASES = ("DRIFTLOOP_STORAGE__REGISTRY_URL", "DRIFTLOOP_STORAGE__PREDICTION_LOG_URL")


def test_compose_keeps_no_database_on_the_shared_volume() -> None:
    # The registry and the prediction log are PostgreSQL databases; the shared volume only holds
    # the BentoML model store (SQLite's locks do not hold on shared or network file systems).
    assert "sqlite" not in COMPOSE.read_text().lower()
    services = compose()["services"]
    for name in ("worker", "inference", "monitor"):
        environment = services[name]["environment"]
        for variable in DATABASES:
            assert environment[variable].startswith("postgresql+psycopg://"), (name, variable)
    init = (COMPOSE.parent / "compose" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE registry;" in init and "CREATE DATABASE predictions;" in init


@pytest.mark.parametrize("target", K8S_TARGETS, ids=lambda p: p.name)
def test_kubernetes_keeps_no_database_on_the_shared_volume(target: Path) -> None:
    documents = render(target)
    assert "sqlite" not in yaml.safe_dump_all(documents).lower()
    for doc in documents:
        if doc["kind"] != "Deployment" or doc["metadata"]["name"] == "prefect-server":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            given = {variable["name"]: variable for variable in container.get("env", [])}
            for variable in DATABASES:
                ref = given[variable]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "driftloop-secrets", (doc["metadata"]["name"], variable)


def test_compose_runs_the_bento_image_following_the_registry() -> None:
    inference = compose()["services"]["inference"]
    assert inference["environment"]["DRIFTLOOP_SERVING__MODE"] == "following"
    assert inference["environment"]["DRIFTLOOP_STORAGE__REGISTRY_URL"].startswith("postgresql")
    assert inference["image"] == "${INFERENCE_IMAGE:-driftloop-inference:latest}"


@pytest.mark.parametrize("target", K8S_TARGETS, ids=lambda p: p.name)
def test_kubernetes_runs_the_bento_image_following_the_registry_as_its_user(target: Path) -> None:
    inference = next(
        doc
        for doc in render(target)
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "inference"
    )
    pod = inference["spec"]["template"]["spec"]
    given = {variable["name"]: variable for variable in pod["containers"][0]["env"]}
    assert given["DRIFTLOOP_SERVING__MODE"]["value"] == "following"
    assert "DRIFTLOOP_STORAGE__REGISTRY_URL" in given
    # The Bento's Dockerfile (services/inference/Dockerfile.j2) runs the service as 10001.
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "USER 10001" in (PROJECT / "services" / "inference" / "Dockerfile.j2").read_text()
