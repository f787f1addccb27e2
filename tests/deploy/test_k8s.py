"""deploy/k8s: every manifest validates (strict) against the Kubernetes schemas, and the pieces fit."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import ServiceSettings
from tests.conftest import require
from tests.deploy.promql import REPO

K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
ENTRYPOINT_ENV = {"APPRANK_HOST", "APPRANK_PORT", "APPRANK_WORKERS"}


def kubernetes_validate() -> Any:
    """The kubernetes-validate package (bundles the Kubernetes JSON schemas; no types of its own)."""
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        require(False, "kubernetes-validate (pip install -e '.[dev]')")
        raise


def documents(path: Path) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return [document for document in loaded if document]


def manifest(kind: str) -> dict[str, Any]:
    found = [document for path in MANIFESTS for document in documents(path) if document["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def validate(document: dict[str, Any]) -> None:
    kubernetes_validate().validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    for document in documents(path):
        validate(document)


def test_strict_validation_rejects_unknown_fields_and_wrong_types() -> None:
    deployment = copy.deepcopy(manifest("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    error = kubernetes_validate().ValidationError
    with pytest.raises(error, match="readinessProbes"):
        validate(deployment)
    deployment = copy.deepcopy(manifest("Deployment"))
    deployment["spec"]["replicas"] = "3"
    with pytest.raises(error, match="not of type"):
        validate(deployment)


def test_kustomization_applies_everything_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    expected = {path.name for path in MANIFESTS} - {"secret.example.yaml"}
    assert sorted(kustomization["resources"]) == sorted(expected)
    assert kustomization["namespace"] == "apprank"
    namespaces = {document["metadata"].get("namespace") for path in MANIFESTS for document in documents(path)}
    assert namespaces == {"apprank", None}  # None: the Namespace itself


def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_deployment_probes_replicas_and_resources() -> None:
    spec = manifest("Deployment")["spec"]
    assert spec["replicas"] == 3
    app = container()
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert app["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert set(app["resources"]) == {"requests", "limits"}


def test_pod_runs_as_non_root_with_a_read_only_root() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"] for mount in container()["volumeMounts"]}
    assert "/tmp" in mounts  # PROMETHEUS_MULTIPROC_DIR lives there


def test_configuration_comes_from_the_configmap_and_the_secret() -> None:
    config = manifest("ConfigMap")
    secret = manifest("Secret")
    app = container()
    assert app["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    references = {entry["name"]: entry["valueFrom"]["secretKeyRef"] for entry in app["env"]}
    assert set(references) == {"APPRANK_DATABASE_URL", "APPRANK_ADMIN_TOKEN"}
    for name, reference in references.items():
        assert reference == {"name": secret["metadata"]["name"], "key": name}
        assert "CHANGE-ME" in secret["stringData"][name]
    known = {f"APPRANK_{field.upper()}" for field in ServiceSettings.model_fields} | ENTRYPOINT_ENV
    assert set(config["data"]) - known == {"PROMETHEUS_MULTIPROC_DIR"}
    assert config["data"]["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    deployment = manifest("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifest("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = manifest("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "apprank"}
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = manifest("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_pods_carry_prometheus_scrape_annotations() -> None:
    annotations = manifest("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }


def retrain_container() -> dict[str, Any]:
    job = manifest("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = job["containers"]
    assert len(containers) == 1
    return containers[0]


def options(args: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line (every option here takes a value)."""
    assert len(args) % 2 == 1, args
    return dict(zip(args[1::2], args[2::2], strict=True))


def test_the_retrain_runs_daily_one_at_a_time_and_resumes_when_retried() -> None:
    cronjob = manifest("CronJob")
    spec = cronjob["spec"]
    minute, hour, *rest = spec["schedule"].split()
    assert rest == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()  # once a day
    assert spec["timeZone"] == "Etc/UTC" and spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["template"]["spec"]["restartPolicy"] == "Never"
    assert retrain_container()["image"].startswith("registry.example.com/apprank-train:")  # Dockerfile.train


def test_the_retrain_arguments_are_options_of_apprank_retrain() -> None:
    import typer.main

    from apprank.cli import build_app

    command = typer.main.get_command(build_app()).commands["retrain"]  # type: ignore[attr-defined]
    known = {name for param in command.params for name in param.opts}
    args = retrain_container()["args"]
    assert args[0] == "retrain"
    given = options(args)
    assert set(given) <= known, set(given) - known
    assert {"--experiment", "--model", "--models", "--url"} <= set(given)
    service = manifest("Service")
    assert given["--url"] == f"http://{service['metadata']['name']}.apprank.svc.cluster.local"
    assert service["spec"]["ports"][0]["port"] == 80


def test_the_retrain_and_the_replicas_share_the_models_volume_and_the_database() -> None:
    claim = manifest("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    retrain_pod = manifest("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    serving_pod = manifest("Deployment")["spec"]["template"]["spec"]
    models_dir = manifest("ConfigMap")["data"]["APPRANK_MODELS_DIR"]
    for pod, path in (
        (retrain_pod, options(retrain_container()["args"])["--models"]),
        (serving_pod, models_dir),
    ):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = [m for c in pod["containers"] for m in c["volumeMounts"] if m["mountPath"] == path]
        assert len(mounts) == 1 and not mounts[0].get("readOnly", False), path
        assert volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    seed = serving_pod["initContainers"][0]
    assert seed["image"] == container()["image"] and "cp -R /models/. /volume/" in seed["command"][-1]
    references = {entry["name"]: entry["valueFrom"]["secretKeyRef"] for entry in retrain_container()["env"]}
    assert set(references) == {"APPRANK_DATABASE_URL", "APPRANK_ADMIN_TOKEN"}


def test_the_shared_models_claim_is_the_one_the_training_job_writes() -> None:
    training = [
        document
        for document in documents(K8S / "training" / "pvc.yaml")
        if document["metadata"]["name"] == "apprank-models"
    ]
    assert training and training[0] == manifest("PersistentVolumeClaim")


def test_the_retrain_pod_runs_as_non_root_with_a_read_only_root() -> None:
    pod = manifest("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    security = retrain_container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert "/tmp" in {mount["mountPath"] for mount in retrain_container()["volumeMounts"]}
