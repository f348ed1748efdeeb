"""docker-compose.yml: accepted by two real compose implementations, and shaped as issue 5 requires (a broker
Redis with persistence and noeviction, GPU reservation, scalable workers, health-gated start, one shared volume,
configuration from an env file, documented variables that exist in the settings classes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from service.listener.settings import ListenerSettings
from tests.deploy.conftest import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO,
    compose_env,
    compose_v1,
    compose_v2,
    dockerfile_of,
    run_compose,
)

APP_SERVICES = ["api", "worker", "worker-cpu", "listener"]
EXAMPLES = sorted((REPO / "deploy").glob("compose.*.example.yml"))
# PAROTID_* variables that are not settings fields: read by the entrypoint, or by the listener's load_settings.
NON_FIELD_VARIABLES = {"PAROTID_REQUIRE_GPU", "PAROTID_LISTENER_CONFIG_FILE"}


def setting_variables() -> dict[str, str]:
    """Every configuration variable of the service and the listener -> the class that reads it."""
    out = {f"PAROTID_{name.upper()}": "Settings" for name in Settings.model_fields}
    out.update({f"PAROTID_LISTENER_{name.upper()}": "ListenerSettings" for name in ListenerSettings.model_fields})
    return out


@pytest.mark.parametrize("implementation", ["v1", "v2"])
def test_compose_file_validates(implementation: str) -> None:
    binary = compose_v1() if implementation == "v1" else compose_v2()
    res = run_compose(binary, "config", "--quiet")
    assert res.returncode == 0, f"{binary} config: {res.stderr}"


def example_files(example: Path) -> tuple[Path, ...]:
    """A standalone example is used alone; an override example on top of docker-compose.yml."""
    return (example,) if "standalone" in example.read_text().split("\n", 1)[0] else (COMPOSE_FILE, example)


def example_env() -> dict[str, str]:
    # TEST-NET-1 addresses: only interpolated, never contacted
    return {
        **compose_env(),
        "PAROTID_NFS_SERVER": "192.0.2.10",
        "PAROTID_REDIS_PUBLISH": "192.0.2.11:6379",
        "PAROTID_REDIS_PASSWORD": "example-password",
    }


@pytest.mark.parametrize("implementation", ["v1", "v2"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_override_examples_validate(implementation: str, example: Path) -> None:
    binary = compose_v1() if implementation == "v1" else compose_v2()
    res = run_compose(binary, "config", "--quiet", files=example_files(example), env=example_env())
    assert res.returncode == 0, f"{binary} config {[f.name for f in example_files(example)]}: {res.stderr}"


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "compose.multi-gpu.example.yml",
        "compose.worker-host.example.yml",
        "compose.nfs.example.yml",
        "compose.redis-remote.example.yml",
    }


def _resolved(files: tuple[Path, ...]) -> dict:
    res = run_compose(compose_v1(), "config", files=files, env=example_env())
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def _without(service: dict, *keys: str) -> dict:
    return {k: v for k, v in service.items() if k not in keys}


def test_multi_gpu_workers_match_the_worker(resolved_compose: dict) -> None:
    """Each worker-gpuN of the multi-GPU override is the worker with another device, and only that."""
    merged = _resolved((COMPOSE_FILE, REPO / "deploy" / "compose.multi-gpu.example.yml"))["services"]
    worker = _without(resolved_compose["services"]["worker"], "deploy")
    extra = sorted(n for n in merged if n.startswith("worker-gpu"))
    assert extra, "no worker-gpuN service in the override"
    for i, name in enumerate(extra, start=1):
        assert _without(merged[name], "deploy") == worker, name
        (device,) = merged[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [str(i)] and "count" not in device


def test_worker_host_example_matches_the_worker(resolved_compose: dict) -> None:
    """The worker of the worker-host file is the main stack's worker without the local Redis dependency, on the
    same job store volume name, which is an NFS mount there."""
    resolved = _resolved((REPO / "deploy" / "compose.worker-host.example.yml",))
    assert list(resolved["services"]) == ["worker"]
    assert resolved["services"]["worker"] == _without(resolved_compose["services"]["worker"], "depends_on")
    volume = resolved["volumes"]["parotid-data"]
    assert volume["name"] == "parotid-data" and volume["driver_opts"]["type"] == "nfs"
    assert "addr=192.0.2.10" in volume["driver_opts"]["o"]


def test_nfs_override_is_the_worker_hosts_volume() -> None:
    """The main host's NFS volume and the worker hosts' one are the same mount of the same export."""
    main = _resolved((COMPOSE_FILE, REPO / "deploy" / "compose.nfs.example.yml"))["volumes"]["parotid-data"]
    worker_host = _resolved((REPO / "deploy" / "compose.worker-host.example.yml",))["volumes"]["parotid-data"]
    assert main == worker_host and main["driver_opts"]["type"] == "nfs"


def test_redis_remote_override() -> None:
    redis = _resolved((COMPOSE_FILE, REPO / "deploy" / "compose.redis-remote.example.yml"))["services"]["redis"]
    assert _ports(redis) == [("192.0.2.11", 6379, 6379)]
    assert redis["environment"]["REDISCLI_AUTH"] == "example-password"


def test_missing_env_file_is_refused(tmp_path: Path) -> None:
    """An operator who forgot to create deploy/parotid.env gets an error naming it, not a stack of defaults."""
    absent = tmp_path / "parotid.env"
    res = run_compose(compose_v1(), "config", "--quiet", env=compose_env(absent))
    assert res.returncode != 0
    assert str(absent) in res.stderr


def test_redis_is_configured_as_a_broker(resolved_compose: dict) -> None:
    redis = resolved_compose["services"]["redis"]
    conf_mount = next(v for v in redis["volumes"] if v.endswith(":ro") and "redis.conf" in v)
    host_path, container_path, _ = conf_mount.rsplit(":", 2)
    assert redis["command"] == ["redis-server", container_path]
    conf = dict(
        line.split(None, 1)
        for line in Path(host_path).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["appendonly"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["dir"] == "/data"
    assert any(v.startswith("redis-data:/data") for v in redis["volumes"]), "the AOF must be on a volume"
    assert resolved_compose["volumes"]["redis-data"]["name"] == "parotid-redis-data"
    assert "ports" not in redis, "the broker is not published by default"
    assert "healthcheck" in redis


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services(resolved_compose: dict, name: str) -> None:
    svc = resolved_compose["services"][name]
    assert svc["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "parotid-data:/data:rw" in svc["volumes"] or "parotid-data:/data" in svc["volumes"]
    assert svc["environment"]["PAROTID_JOB_DIR"] == "/data/jobs"
    assert svc["environment"]["PAROTID_BROKER_URL"].startswith("redis://redis:6379/")
    assert svc["healthcheck"]["test"][:1] == ["CMD"]
    assert svc["command"][0] in ("serve", "worker", "listen")
    assert "container_name" not in svc
    df = dockerfile_of(svc)
    assert df.exec_form("ENTRYPOINT") == ["/app/docker/entrypoint.sh"]


@pytest.mark.parametrize("name", ["worker", "worker-cpu"])
def test_workers_scale(resolved_compose: dict, name: str) -> None:
    """docker compose up --scale worker=N: no fixed container name, no host port, one process per container."""
    svc = resolved_compose["services"][name]
    assert "container_name" not in svc and "ports" not in svc and "hostname" not in svc
    assert svc["command"] == ["worker"]


def test_gpu_worker_reserves_a_gpu(resolved_compose: dict) -> None:
    worker = resolved_compose["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1
    assert worker["build"]["dockerfile"].endswith("Dockerfile.gpu")
    assert "profiles" not in worker
    assert resolved_compose["services"]["worker-cpu"]["profiles"] == ["cpu"]


def _ports(service: dict) -> list[tuple[str, int, int]]:
    """(host address or '' for all, published port, container port) of each published port, short or long form."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            *host, published, target = p.split("/")[0].split(":")
            out.append((host[0] if host else "", int(published), int(target)))
    return out


def test_published_ports(resolved_compose: dict) -> None:
    services = resolved_compose["services"]
    assert _ports(services["api"]) == [("127.0.0.1", 8000, 8000)], "the API is loopback-only behind a TLS proxy"
    assert _ports(services["listener"]) == [("", 11112, 11112)]
    assert services["listener"]["environment"]["PAROTID_LISTENER_PORT"] == "11112"
    assert services["api"]["environment"]["PAROTID_PORT"] == "8000"


def test_one_shared_volume(resolved_compose: dict) -> None:
    assert resolved_compose["volumes"]["parotid-data"]["name"] == "parotid-data"
    for name in APP_SERVICES:
        env = resolved_compose["services"][name]["environment"]
        assert env["PAROTID_LISTENER_SPOOL_DIR"].startswith("/data/")


def test_variables_exist_in_the_settings_classes(resolved_compose: dict) -> None:
    """A misspelt or renamed variable would be ignored silently by pydantic-settings: every PAROTID_* name in the
    env example, the compose file and the Dockerfiles must be a field of Settings or ListenerSettings."""
    known = setting_variables().keys() | NON_FIELD_VARIABLES
    names: dict[str, str] = {}
    for m in re.finditer(r"^#?\s*(PAROTID_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M):
        names[m.group(1)] = ENV_EXAMPLE.name
    for name, svc in resolved_compose["services"].items():
        for key in svc.get("environment", {}):
            names[key] = f"docker-compose.yml service {name}"
        if "build" in svc:
            for key in dockerfile_of(svc).env():
                if key.startswith("PAROTID_"):
                    names[key] = dockerfile_of(svc).path.name
    unknown = {n: where for n, where in names.items() if n.startswith("PAROTID_") and n not in known}
    assert not unknown, f"not settings fields: {unknown}"


def test_operations_doc_covers_every_variable() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    undocumented = [v for v in [*setting_variables(), *NON_FIELD_VARIABLES] if f"`{v}`" not in doc]
    assert not undocumented, f"docs/operations.md does not document: {undocumented}"


def _doc_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_operations_doc_defaults_match_the_code() -> None:
    """The default column of docs/operations.md states the code's default for every plain (number, text, flag)
    setting, so a changed default cannot leave the operator's table behind."""
    doc = (REPO / "docs" / "operations.md").read_text()
    wrong = {}
    for cls, prefix in ((Settings, "PAROTID_"), (ListenerSettings, "PAROTID_LISTENER_")):
        for name, field in cls.model_fields.items():
            if field.default_factory is not None or not isinstance(field.default, (int, float, str, bool)):
                continue
            variable = prefix + name.upper()
            row = re.search(rf"^\| `{variable}` \| ([^|]*)\|", doc, re.M)
            expected = f"`{_doc_value(field.default)}`" if field.default != "" else "empty"
            if row is None or not row.group(1).strip().startswith(expected):
                wrong[variable] = (expected, row.group(1).strip() if row else None)
    assert not wrong, f"docs/operations.md defaults differ from the code (expected, documented): {wrong}"


def test_env_example_comments_show_the_defaults() -> None:
    """A commented-out '# PAROTID_X=value' line of the env example shows the code's default (settings without a
    default show an example value instead)."""
    fields = {f"PAROTID_{n.upper()}": f for n, f in Settings.model_fields.items()}
    fields.update({f"PAROTID_LISTENER_{n.upper()}": f for n, f in ListenerSettings.model_fields.items()})
    checked, wrong = 0, {}
    for m in re.finditer(r"^# (PAROTID_[A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.M):
        field = fields[m.group(1)]
        if field.default_factory is not None or field.default is None:
            continue
        checked += 1
        if m.group(2) != _doc_value(field.default) and m.group(2) != str(field.default):
            wrong[m.group(1)] = (m.group(2), field.default)
    assert checked >= 10 and not wrong, wrong
