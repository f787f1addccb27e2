"""docker-compose.yml: valid against the Compose Specification's JSON schema, and wired as intended."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from service.settings import ServiceSettings
from tests.deploy.promql import REPO

SCHEMA = REPO / "tests" / "deploy" / "schemas" / "compose-spec.json"
# Read by the image's entry point (deploy/docker/entrypoint.sh), not by ServiceSettings.
ENTRYPOINT_ENV = {"APPRANK_HOST", "APPRANK_PORT", "APPRANK_WORKERS"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_spec_schema() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("unknown service key", "'replica'"),
        ("condition typo", "'service_ready'"),
        ("healthcheck typo", "'intervall'"),
    ],
)
def test_schema_rejects_broken_files(breakage: str, named: str) -> None:
    document = copy.deepcopy(compose())
    apprank = document["services"]["apprank"]
    if breakage == "unknown service key":
        apprank["replica"] = 2
    elif breakage == "condition typo":
        apprank["depends_on"]["postgres"]["condition"] = "service_ready"
    else:
        apprank["healthcheck"]["intervall"] = "10s"
    errors = schema_errors(document)
    assert errors and all(error.startswith("$.services.apprank") for error in errors), errors
    assert any(named in error for error in errors), errors


def test_two_replicas_without_a_fixed_host_port() -> None:
    apprank = compose()["services"]["apprank"]
    assert apprank["deploy"]["replicas"] == 2
    assert "ports" not in apprank and "container_name" not in apprank
    assert apprank["expose"] == ["8000"]


def test_replicas_share_postgresql_and_wait_for_it() -> None:
    services = compose()["services"]
    url = services["apprank"]["environment"]["APPRANK_DATABASE_URL"]
    assert re.fullmatch(r"postgresql://apprank:\$\{POSTGRES_PASSWORD:-[^}]+\}@postgres:5432/apprank", url)
    assert services["apprank"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]


def test_every_service_has_a_healthcheck_and_named_volumes_are_declared() -> None:
    document = compose()
    for name, service in document["services"].items():
        assert service["healthcheck"]["test"], name
    named = {
        volume.split(":")[0]
        for service in document["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith(".")
    }
    assert named == set(document["volumes"]) == {"pgdata", "prometheus-data", "grafana-data"}


def test_dependencies_wait_for_health() -> None:
    services = compose()["services"]
    assert services["front"]["depends_on"]["apprank"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)


def test_apprank_is_ready_only_with_models_and_store() -> None:
    apprank = compose()["services"]["apprank"]
    assert apprank["healthcheck"]["test"][-1] == "/readyz"
    assert "./models:/models:ro" in apprank["volumes"]
    assert apprank["read_only"] is True and apprank["tmpfs"] == ["/tmp"]


def test_apprank_environment_names_are_settings_the_service_reads() -> None:
    known = {f"APPRANK_{field.upper()}" for field in ServiceSettings.model_fields} | ENTRYPOINT_ENV
    for name in ("apprank", "retrain"):
        environment = compose()["services"][name]["environment"]
        assert set(environment) - known - {"RETRAIN_AT"} == set(), name


def test_bind_mounted_files_exist() -> None:
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source != "./models":  # models come from `make run`
                assert (REPO / source).exists(), source


def test_published_ports_listen_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_front_balances_over_the_apprank_service() -> None:
    nginx = (REPO / "deploy" / "front" / "nginx.conf").read_text()
    assert re.search(r"upstream apprank \{\s*server apprank:8000\b", nginx)
    assert "proxy_pass http://apprank;" in nginx
    front = compose()["services"]["front"]
    assert front["ports"] == ["127.0.0.1:8000:8000"]
    assert "/front-healthz" in front["healthcheck"]["test"][-1]


def test_the_retrain_runs_on_a_schedule_against_the_shared_database_and_models() -> None:
    services = compose()["services"]
    retrain, apprank = services["retrain"], services["apprank"]
    assert retrain["build"]["dockerfile"] == "Dockerfile.train" and (REPO / "Dockerfile.train").is_file()
    assert retrain["environment"]["APPRANK_DATABASE_URL"] == apprank["environment"]["APPRANK_DATABASE_URL"]
    assert "./models:/models" in retrain["volumes"] and "./models:/models:ro" in apprank["volumes"]
    assert retrain["depends_on"]["postgres"] == {"condition": "service_healthy"}
    script = retrain["command"][0]
    assert "while true" in script and "sleep" in script  # the schedule: once a day at RETRAIN_AT
    assert "$$" in script and "${" not in script.replace("$${", "")  # compose leaves the shell's $ alone


def test_the_retrain_command_line_is_one_apprank_retrain_accepts() -> None:
    import shlex

    import typer.main

    from apprank.cli import build_app

    script = compose()["services"]["retrain"]["command"][0].replace("\\\n", " ")
    line = next(part for part in script.splitlines() if "apprank retrain" in part)
    args = shlex.split(line.split("||")[0].strip())
    assert args[:2] == ["apprank", "retrain"]
    command = typer.main.get_command(build_app()).commands["retrain"]  # type: ignore[attr-defined]
    known = {name for param in command.params for name in param.opts}
    assert set(args[2::2]) <= known and {"--experiment", "--model", "--models", "--url"} <= set(args[2::2])
    assert (
        args[args.index("--models") + 1]
        == compose()["services"]["retrain"]["environment"]["APPRANK_MODELS_DIR"]
    )
