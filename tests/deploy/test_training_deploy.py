"""deploy/k8s/training and Dockerfile.train: the multi-node training Job, its Service, and the torch image.

Checked without a cluster or a Docker engine: strict Kubernetes schemas, and that the Job's command is
one the CLI accepts and that describes a runnable topology for every pod index.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from apprank.cli import build_app
from tests.deploy.dockerfile import (
    Dockerfile,
    dockerignore_patterns,
    dockerignored,
    parse,
    pip_install_arguments,
)
from tests.deploy.promql import REPO
from tests.deploy.test_k8s import documents, validate
from training.launch import Topology, torchrun_arguments, without_launch_options

TRAINING = REPO / "deploy" / "k8s" / "training"
MANIFESTS = sorted(path for path in TRAINING.glob("*.yaml") if path.name != "kustomization.yaml")
PREPARE = TRAINING / "prepare-job.yaml"  # applied on its own, before the training Job
TRAIN_IMAGE = REPO / "Dockerfile.train"


def kind(name: str) -> list[dict[str, Any]]:
    return [document for path in MANIFESTS for document in documents(path) if document["kind"] == name]


def job(name: str = "apprank-train") -> dict[str, Any]:
    (found,) = [document for document in kind("Job") if document["metadata"]["name"] == name]
    return found


def pod(name: str = "apprank-train") -> dict[str, Any]:
    spec: dict[str, Any] = job(name)["spec"]["template"]["spec"]
    return spec


def container(name: str = "apprank-train") -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod(name)["containers"]
    assert len(containers) == 1
    return containers[0]


def option(name: str, job_name: str = "apprank-train") -> str:
    args: list[str] = container(job_name)["args"]
    return args[args.index(name) + 1]


def env() -> dict[str, Any]:
    return {entry["name"]: entry for entry in container()["env"]}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_training_manifests_validate_against_the_kubernetes_schema(path: Path) -> None:
    for document in documents(path):
        validate(document)


def test_the_training_kustomization_applies_every_manifest_in_the_namespace() -> None:
    kustomization = yaml.safe_load((TRAINING / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in MANIFESTS if path != PREPARE]
    assert kustomization["namespace"] == "apprank"
    assert {document["metadata"]["namespace"] for path in MANIFESTS for document in documents(path)} == {
        "apprank"
    }
    (image,) = kustomization["images"]
    assert container()["image"].partition(":")[0] == image["name"]
    assert image["name"].endswith("/apprank-train")  # the torch image, never the serving one


def test_an_indexed_job_of_nnodes_pods_that_fail_as_a_whole() -> None:
    spec = job()["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(option("--nnodes")) >= 2
    assert spec["backoffLimit"] == 0 and pod()["restartPolicy"] == "Never"
    assert container()["args"][0] == "train"


COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # the Job controller's annotation on each pod
VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def test_node_rank_comes_from_the_job_completion_index_alone() -> None:
    entries = [entry for entry in container()["env"] if entry["name"] == "NODE_RANK"]
    assert entries == [
        {
            "name": "NODE_RANK",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        }
    ]  # defined once, no literal value beside it
    assert "envFrom" not in container()  # nothing else can define or shadow it
    args: list[str] = container()["args"]
    assert args.count("--node-rank") == 1 and not any(arg.startswith("--node-rank=") for arg in args)
    assert option("--node-rank") == "$(NODE_RANK)"


def pod_env(index: int) -> dict[str, str]:
    """The container's variables in the pod of completion index ``index``, as the kubelet resolves them."""
    annotations = {COMPLETION_INDEX: str(index)}
    resolved: dict[str, str] = {}
    for entry in container()["env"]:
        if "value" in entry:
            resolved[entry["name"]] = expand(entry["value"], resolved)
            continue
        path = entry["valueFrom"]["fieldRef"]["fieldPath"]
        match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
        assert match is not None, path
        resolved[entry["name"]] = annotations[match.group(1)]
    return resolved


def expand(text: str, variables: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is ``$``, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))

    return VARIABLE.sub(replace, text)


def test_each_pod_parses_to_its_own_node_rank_through_the_cli() -> None:
    spec = job()["spec"]
    command = typer.main.get_command(build_app())
    assert isinstance(command, typer.core.TyperGroup)
    ranks = []
    for index in range(spec["completions"]):
        args = [expand(arg, pod_env(index)) for arg in container()["args"]]
        assert not any("$(" in arg for arg in args), args  # every reference resolved
        context = command.commands[args[0]].make_context(args[0], args[1:])
        params = context.params
        topology = Topology(
            params["nproc"],
            params["nnodes"],
            params["node_rank"],
            params["master_addr"],
            params["master_port"],
        )
        assert topology.node_rank == index and topology.nnodes == spec["completions"]
        placement = torchrun_arguments(topology, without_launch_options(args))  # as `apprank train` does
        assert [arg for arg in placement if arg.startswith("--node-rank")] == [f"--node-rank={index}"]
        ranks.append(topology.node_rank)
    assert ranks == list(range(spec["completions"]))  # every node rank once: one pod each


def test_pod_zero_is_the_rendezvous_behind_a_headless_service() -> None:
    (service,) = kind("Service")
    name = service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert pod()["subdomain"] == name
    labels = job()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # an Indexed Job's pod is named <job>-<index>; with the subdomain it resolves as <job>-<index>.<service>
    assert option("--master-addr") == f"{job()['metadata']['name']}-0.{name}"
    (port,) = service["spec"]["ports"]
    (container_port,) = container()["ports"]
    assert int(option("--master-port")) == port["port"] == container_port["containerPort"]
    assert port["targetPort"] == container_port["name"]


def test_the_collectives_bind_to_the_pod_interface() -> None:
    assert env()["GLOO_SOCKET_IFNAME"]["value"] == env()["NCCL_SOCKET_IFNAME"]["value"] == "eth0"


def command_options(name: str) -> set[str]:
    """The options of ``apprank <name>``, from the CLI itself."""
    command = typer.main.get_command(build_app())
    assert isinstance(command, typer.core.TyperGroup)
    return {flag for parameter in command.commands[name].params for flag in getattr(parameter, "opts", [])}


def test_the_job_command_is_one_the_cli_accepts_for_every_pod() -> None:
    args: list[str] = container()["args"]
    assert {arg for arg in args if arg.startswith("--")} <= command_options("train")
    nnodes = int(option("--nnodes"))
    for index in range(nnodes):
        topology = Topology(
            nproc=int(option("--nproc")),
            nnodes=nnodes,
            node_rank=int(option("--node-rank").replace("$(NODE_RANK)", str(index))),
            master_addr=option("--master-addr"),
            master_port=int(option("--master-port")),
        )
        assert f"--node-rank={index}" in torchrun_arguments(topology, args)


def test_data_is_read_only_shared_storage_and_the_bundle_lands_on_shared_storage() -> None:
    claims = {document["metadata"]["name"]: document for document in kind("PersistentVolumeClaim")}
    volumes = {volume["name"]: volume for volume in pod()["volumes"]}
    mounts: dict[str, dict[str, Any]] = {mount["mountPath"]: mount for mount in container()["volumeMounts"]}

    def mount_of(path: str) -> dict[str, Any]:
        found = [mount for root, mount in mounts.items() if path.startswith(root.rstrip("/") + "/")]
        assert len(found) == 1, path
        return found[0]

    data, out = mount_of(option("--data")), mount_of(option("--out"))
    assert data["readOnly"] is True and not out.get("readOnly", False)
    for mount in (data, out):
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts it


def test_training_pods_run_as_non_root_with_a_read_only_root() -> None:
    assert pod()["securityContext"]["runAsNonRoot"] is True
    assert pod()["securityContext"]["runAsUser"] == 10001  # Dockerfile.train's USER
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "/tmp" in {mount["mountPath"] for mount in container()["volumeMounts"]}
    assert pod()["automountServiceAccountToken"] is False


def test_only_the_trainer_pods_reach_the_trainer_pods() -> None:
    (policy,) = kind("NetworkPolicy")
    labels = job()["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule == {"from": [{"podSelector": {"matchLabels": selector}}]}  # every port, trainers only


def test_the_prepare_job_writes_the_dataset_the_training_job_reads() -> None:
    args: list[str] = container("apprank-prepare")["args"]
    assert args[0] == "prepare"
    assert {arg for arg in args if arg.startswith("--")} <= command_options("prepare")
    assert option("--out", "apprank-prepare") == option("--data")
    assert container("apprank-prepare")["image"] == container()["image"]
    (mount,) = [m for m in container("apprank-prepare")["volumeMounts"] if m["name"] == "datasets"]
    assert not mount.get("readOnly", False)  # it writes there; the training pods only read
    for name in ("apprank-prepare", "apprank-train"):
        (volume,) = [v for v in pod(name)["volumes"] if v["name"] == "datasets"]
        assert volume["persistentVolumeClaim"]["claimName"] == "apprank-datasets"
    assert pod("apprank-prepare")["securityContext"]["runAsUser"] == 10001
    assert container("apprank-prepare")["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.fixture(scope="module")
def image() -> Dockerfile:
    return parse(TRAIN_IMAGE)


def test_the_train_image_is_multi_stage_with_the_venv_from_the_builder(image: Dockerfile) -> None:
    builder, runtime = image.stage("builder"), image.stages[-1]
    assert runtime.name == "runtime" and runtime.base == "${PYTHON_IMAGE}"
    assert image.image(runtime).startswith("python:3.11-slim")
    assert "--from=builder /opt/venv /opt/venv" in runtime.all("COPY")
    assert not any("pip" in run for run in runtime.all("RUN"))
    assert "python -m venv /opt/venv" in " ".join(builder.all("RUN"))


def test_the_train_image_installs_pyprojects_torch_and_the_train_extra(image: Dockerfile) -> None:
    installs = [args for run in image.stage("builder").all("RUN") for args in pip_install_arguments(run)]
    assert [".[train]"] in installs
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (torch_pin,) = [requirement for requirement in extras["train"] if requirement.startswith("torch==")]
    arguments = dict(arg.split("=", 1) for arg in image.stage("builder").all("ARG"))
    assert f"torch=={arguments['TORCH_VERSION']}" == torch_pin
    assert arguments["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert ["torch==${TORCH_VERSION}", "--index-url", "${TORCH_INDEX_URL}"] in installs


def test_the_train_image_runs_apprank_as_a_non_root_user(image: Dockerfile) -> None:
    runtime = image.stages[-1]
    assert image.effective(runtime, "USER") == "10001:10001"  # deploy/k8s/training's runAsUser
    assert image.effective(runtime, "ENTRYPOINT") == '["apprank"]'
    assert image.env(runtime)["HOME"].startswith("/tmp")  # the read-only root leaves only /tmp writable


def test_the_train_image_copies_what_it_needs_from_the_build_context(image: Dockerfile) -> None:
    patterns = dockerignore_patterns(REPO / ".dockerignore")
    copies = [args for stage in image.stages for args in stage.all("COPY") if "--from=" not in args]
    for args in copies:
        for source in args.split()[:-1]:
            assert (REPO / source).exists() and not dockerignored(source.rstrip("/"), patterns), source
    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {args.split()[0].rstrip("/") for args in copies}
    assert {pattern.rstrip("*") for pattern in found["include"]} <= copied
    # the schemas go where training/datasets.py looks for them: beside the installed packages
    assert "configs/ /opt/venv/lib/python3.11/site-packages/configs/" in copies
