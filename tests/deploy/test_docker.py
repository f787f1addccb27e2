"""The images, checked without a Docker engine: Dockerfile structure, build context, entry point, probe."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.deploy.dockerfile import (
    Dockerfile,
    dockerignore_patterns,
    dockerignored,
    parse,
    pip_install_arguments,
)
from tests.deploy.promql import REPO

CPU = REPO / "Dockerfile"
GPU = REPO / "Dockerfile.gpu"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"


@pytest.fixture(params=[CPU, GPU], ids=["cpu", "gpu"])
def image(request: pytest.FixtureRequest) -> Dockerfile:
    path: Path = request.param
    return parse(path)


def installs(dockerfile: Dockerfile) -> list[list[str]]:
    return [
        args for stage in dockerfile.stages for run in stage.all("RUN") for args in pip_install_arguments(run)
    ]


def test_multi_stage_with_the_venv_copied_from_the_builder(image: Dockerfile) -> None:
    builder, runtime = image.stage("builder"), image.stages[-1]
    assert len(image.stages) >= 2 and runtime.name == "runtime"
    assert "python -m venv /opt/venv" in " ".join(builder.all("RUN")).replace("python3.11", "python")
    copies = [args for stage in image.chain(runtime) for args in stage.all("COPY")]
    assert "--from=builder /opt/venv /opt/venv" in copies
    # the runtime never runs pip: nothing is compiled or downloaded in the final image
    assert not any("pip" in run for stage in image.chain(runtime) for run in stage.all("RUN"))


def test_final_image_runs_as_a_non_root_user(image: Dockerfile) -> None:
    user = image.effective(image.stages[-1], "USER")
    assert user is not None
    assert user.split(":")[0] not in {"root", "0"}
    assert user == "10001:10001"  # deploy/k8s's runAsUser


def test_final_image_has_a_python_healthcheck_on_healthz(image: Dockerfile) -> None:
    check = image.effective(image.stages[-1], "HEALTHCHECK")
    assert check is not None
    assert '"python", "/usr/local/lib/apprank/healthcheck.py", "/healthz"' in check
    assert "--interval=" in check and "--timeout=" in check


def test_only_serving_dependencies_are_installed(image: Dockerfile) -> None:
    arguments = [word for args in installs(image) for word in args]
    assert ".[serve]" in arguments
    assert not [word for word in arguments if "torch" in word or "train" in word]


def test_runtime_environment(image: Dockerfile) -> None:
    env = image.env(image.stages[-1])
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert env["APPRANK_MODELS_DIR"] == "/models"
    assert int(env["APPRANK_WORKERS"]) >= 1
    assert env["APPRANK_PORT"] == "8000"
    assert image.effective(image.stages[-1], "ENTRYPOINT") == '["/usr/local/bin/apprank-entrypoint"]'


def test_copied_sources_exist_and_are_in_the_build_context(image: Dockerfile) -> None:
    patterns = dockerignore_patterns(REPO / ".dockerignore")
    for stage in image.stages:
        for args in stage.all("COPY"):
            words = [word for word in args.split() if not word.startswith("--")]
            if "--from=" in args:
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), source
                assert not dockerignored(source.rstrip("/"), patterns), source


def test_every_installed_package_is_copied_into_the_builder(image: Dockerfile) -> None:
    """pyproject's packages (what `pip install .` finds) are all in the image: the CLI imports them."""
    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in found["include"]}
    copied = {args.split()[0].rstrip("/") for args in image.stage("builder").all("COPY")}
    assert packages <= copied, packages - copied


def test_cpu_image_is_slim_python_311() -> None:
    dockerfile = parse(CPU)
    assert dockerfile.image(dockerfile.stages[-1]).startswith("python:3.11-slim")
    assert dockerfile.image(dockerfile.stage("builder")).startswith("python:3.11-slim")


def test_cpu_image_can_bake_the_models() -> None:
    dockerfile = parse(CPU)
    baked = dockerfile.stage("baked")
    assert baked.base == "base"
    assert baked.all("COPY") == ["--from=models --chown=10001:10001 . /models/"]
    assert dockerfile.stages[-1].base == "base"  # the default target mounts the models instead


def test_gpu_image_runs_onnxruntime_gpu_on_cuda() -> None:
    dockerfile = parse(GPU)
    assert dockerfile.image(dockerfile.stages[-1]).startswith("nvidia/cuda:12.")
    assert "cudnn-runtime" in dockerfile.image(dockerfile.stages[-1])
    runs = " ".join(dockerfile.stage("builder").all("RUN"))
    assert "pip uninstall -y onnxruntime" in runs
    assert [".[gpu]"] in installs(dockerfile)
    assert "CUDAExecutionProvider" in runs


def test_serving_image_draws_the_report_chart_and_ships_the_console(image: Dockerfile) -> None:
    """report.png and the console's SVG need matplotlib (the serve extra) and a writable config dir for
    its font cache (the user has no home); the console's files are package data of ``service``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    serve = project["project"]["optional-dependencies"]["serve"]
    assert any(requirement.startswith("matplotlib==") for requirement in serve)
    assert image.env(image.stages[-1])["MPLCONFIGDIR"].startswith("/tmp/")
    package_data = project["tool"]["setuptools"]["package-data"]["service.console"]
    assert package_data == ["static/*"] and (REPO / "service" / "console" / "static" / "index.html").is_file()


def test_pyproject_serving_extras_pull_no_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    serving = project["dependencies"] + project["optional-dependencies"]["serve"]
    assert not [requirement for requirement in serving if requirement.lower().startswith("torch")]
    assert any(
        requirement.startswith("onnxruntime-gpu==") for requirement in project["optional-dependencies"]["gpu"]
    )


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("models/deepfm/model.onnx", True),
        ("artifacts/run1/metrics.json", True),
        ("tests/conftest.py", True),
        (".pytest_cache/v/cache", True),
        ("service/__pycache__/app.cpython-311.pyc", True),
        ("apprank.egg-info/PKG-INFO", True),
        ("service/app.py", False),
        ("model/schema.py", False),
        ("pyproject.toml", False),
        ("deploy/docker/entrypoint.sh", False),
        ("deploy/k8s/deployment.yaml", True),
    ],
)
def test_dockerignore_keeps_the_context_to_what_the_image_needs(path: str, ignored: bool) -> None:
    assert dockerignored(path, dockerignore_patterns(REPO / ".dockerignore")) is ignored


@pytest.fixture
def fake_apprank(tmp_path: Path) -> Path:
    """An ``apprank`` on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apprank"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    script.chmod(0o755)
    return tmp_path


def run_entrypoint(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{home / 'bin'}:/usr/bin:/bin",
        "APPRANK_MODELS_DIR": "/models",
        "APPRANK_HOST": "0.0.0.0",
        "APPRANK_PORT": "8000",
        "APPRANK_WORKERS": "3",
        "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"),
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, check=False
    )


def test_entrypoint_serves_from_the_environment_with_a_clean_metrics_dir(fake_apprank: Path) -> None:
    metrics = fake_apprank / "metrics"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    result = run_entrypoint(fake_apprank)
    assert result.returncode == 0, result.stderr
    assert (fake_apprank / "args").read_text().split() == (
        "serve --models /models --host 0.0.0.0 --port 8000 --workers 3".split()
    )
    assert metrics.is_dir() and list(metrics.iterdir()) == []


def test_entrypoint_runs_another_command_when_given(fake_apprank: Path) -> None:
    result = run_entrypoint(fake_apprank, "apprank", "report", "--experiment", "launch")
    assert result.returncode == 0, result.stderr
    assert (fake_apprank / "args").read_text().split() == ["report", "--experiment", "launch"]


def test_the_cli_has_the_serve_options_the_entrypoint_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from apprank.cli import main; main()", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    require(result.returncode == 0, "the `apprank serve` command")
    for option in ("--models", "--host", "--port", "--workers"):
        assert option in result.stdout, option


class _Probe(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response({"/healthz": 200, "/readyz": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def probe_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("path", "code"), [("/healthz", 0), ("/readyz", 1), ("/missing", 1)])
def test_healthcheck_script_exit_status(probe_port: int, path: str, code: int) -> None:
    env = {**os.environ, "APPRANK_PORT": str(probe_port)}
    result = subprocess.run([sys.executable, str(HEALTHCHECK), path], env=env, check=False, timeout=30)
    assert result.returncode == code


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    from tests.deploy.prometheus_harness import free_port

    env = {**os.environ, "APPRANK_PORT": str(free_port())}
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, check=False, timeout=30)
    assert result.returncode == 1
