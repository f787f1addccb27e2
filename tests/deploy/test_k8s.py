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
