"""Every container command of docker-compose.yml, run outside Docker: it starts and answers its own health check.

For each service, the command is exactly what a container would run: the image's ENTRYPOINT (read from its
Dockerfile) plus the service's ``command``, with the environment compose resolves (the image's ENV, then
env_file = deploy/parotid.env.example, then ``environment``; taken from ``docker-compose config``'s output). The
health check is the service's compose ``healthcheck.test``, run the same way. After SIGTERM (what ``docker stop``
sends) the process must exit cleanly, and the same health check must then fail (a check that cannot fail proves
nothing).

Rewritten, and only these, because no container exists here (``to_host`` below):
- paths inside the image: ``/app`` -> the repository (the image's WORKDIR and source), ``/data`` and
  ``/home/parotid`` -> a temporary folder; the ``python3`` of the image -> the repository's virtual environment
  (first on PATH);
- host names: the compose service name ``redis`` -> 127.0.0.1, at the port of the test's own redis-server;
- ports: the API's 8000 and the listener's 11112 -> free ports, bound to 127.0.0.1 rather than 0.0.0.0;
- ``PAROTID_REQUIRE_GPU=1`` (GPU image) -> 0, since this machine has no GPU; ``test_gpu_worker_refuses_without_gpu``
  runs the same command with 1 and checks the refusal.
The ``redis`` service itself is run from its compose command with deploy/redis.conf (``dir /data`` rewritten as
above, ``--port`` added), so the app services use a Redis configured exactly as in production, private to this
test (no other test's queues are touched). The official Redis image's entrypoint only drops root privileges, so it
is not reproduced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.deploy.conftest import REPO, VENV_BIN, dockerfile_of
from tests.support.net import free_port

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
APP_SERVICES = ["api", "worker", "worker-cpu", "listener"]


@dataclass
class Host:
    """Where the container world lands on this machine."""

    root: Path
    redis_port: int

    def path(self, value: str) -> str:
        for inside, outside in (("/app", REPO), ("/data", self.root / "data"), ("/home/parotid", self.root / "home")):
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    def to_host(self, env: dict[str, str]) -> dict[str, str]:
        out = {k: self.path(v) for k, v in env.items()}
        for key, value in out.items():
            if value.startswith("redis://redis:6379"):
                out[key] = value.replace("redis://redis:6379", f"redis://127.0.0.1:{self.redis_port}", 1)
        for key in ("PAROTID_HOST", "PAROTID_LISTENER_BIND_HOST"):
            if out.get(key) == "0.0.0.0":
                out[key] = "127.0.0.1"
        for key in ("PAROTID_PORT", "PAROTID_LISTENER_PORT"):
            if key in out:
                out[key] = str(free_port())
        if out.get("PAROTID_REQUIRE_GPU") == "1":
            out["PAROTID_REQUIRE_GPU"] = "0"
        out["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
        out["LANG"] = "C.UTF-8"
        return out


def service_env(resolved: dict, name: str, host: Host) -> dict[str, str]:
    svc = resolved["services"][name]
    env = dict(dockerfile_of(svc).env()) if "build" in svc else {}
    env.update({k: "" if v is None else str(v) for k, v in svc.get("environment", {}).items()})
    return host.to_host(env)


def service_argv(resolved: dict, name: str, host: Host) -> list[str]:
    svc = resolved["services"][name]
    entrypoint = dockerfile_of(svc).exec_form("ENTRYPOINT") if "build" in svc else []
    return [host.path(a) for a in [*entrypoint, *svc["command"]]]


def health_argv(resolved: dict, name: str, host: Host) -> list[str]:
    test = resolved["services"][name]["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", host.path(test[1])]
    assert test[0] == "CMD", test
    return [host.path(a) for a in test[1:]]


def run_health(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


class Service:
    """One container command as a subprocess (its own session, output to a log file)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_healthy(self, health: list[str]) -> subprocess.CompletedProcess:
        end = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.argv} exited with {self.proc.returncode}:\n{self.output()}")
            res = run_health(health, self.env)
            if res.returncode == 0:
                return res
            if time.monotonic() > end:
                pytest.fail(
                    f"{health} still failing after {START_TIMEOUT_S} s: {res.stdout}{res.stderr}\n"
                    f"service output:\n{self.output()}"
                )
            time.sleep(1.0)

    def stop(self) -> int:
        """SIGTERM (docker stop), then the exit status; SIGKILL to the process group only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                pytest.fail(f"{self.argv} ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{self.output()}")
        self._fh.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._fh.close()


@pytest.fixture(scope="module")
def stack(resolved_compose: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, Host]]:
    """The compose ``redis`` service, started from its own command and config file, healthy."""
    require_tool("redis-server")
    require_tool("redis-cli")
    root = tmp_path_factory.mktemp("compose-host")
    host = Host(root, free_port())
    (root / "data").mkdir()
    (root / "home").mkdir()
    svc = resolved_compose["services"]["redis"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"] if v.startswith("/")}
    conf_inside = svc["command"][1]
    conf_text = Path(mounts[conf_inside]).read_text()
    conf = root / "redis.conf"
    conf.write_text(
        "\n".join(f"dir {host.path(ln.split()[1])}" if ln.startswith("dir ") else ln for ln in conf_text.splitlines())
        + "\n"
    )
    argv = [svc["command"][0], str(conf), "--port", str(host.redis_port), "--bind", "127.0.0.1"]
    redis = Service(argv, {"PATH": os.environ["PATH"]}, root / "redis.log")
    health = [
        a.replace("redis-cli", f"redis-cli -p {host.redis_port}") for a in health_argv(resolved_compose, "redis", host)
    ]
    try:
        redis.wait_healthy(health)
        yield resolved_compose, host
    finally:
        redis.stop()


def test_redis_runs_as_a_persistent_broker(stack: tuple[dict, Host]) -> None:
    _, host = stack
    cli = ["redis-cli", "-p", str(host.redis_port)]
    for key, expected in (("appendonly", "yes"), ("maxmemory-policy", "noeviction"), ("dir", str(host.root / "data"))):
        out = subprocess.run([*cli, "config", "get", key], capture_output=True, text=True, check=True).stdout.split()
        assert out == [key, expected]
    assert (host.root / "data" / "appendonlydir").is_dir(), "the append-only file is written under /data"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_container_command_starts_and_is_healthy(stack: tuple[dict, Host], name: str, tmp_path: Path) -> None:
    resolved, host = stack
    env = service_env(resolved, name, host)
    health = health_argv(resolved, name, host)
    service = Service(service_argv(resolved, name, host), env, tmp_path / f"{name}.log")
    try:
        res = service.wait_healthy(health)
        assert res.stdout.startswith("healthy: "), res.stdout
        if name == "listener":
            assert "PAROTID_SEG@127.0.0.1" in res.stdout
        rc = service.stop()
    finally:
        service.kill()
    # 0, or death by the SIGTERM itself once shut down: uvicorn re-raises the signal after its graceful shutdown
    # (exit status 143 in Docker, which docker stop treats as a normal stop)
    assert rc in (0, -signal.SIGTERM), f"{name}: exit status {rc} after SIGTERM:\n{service.output()}"
    after = run_health(health, env)
    assert after.returncode == 1 and after.stdout.startswith("UNHEALTHY: "), after.stdout + after.stderr


def test_gpu_worker_refuses_without_gpu(stack: tuple[dict, Host], tmp_path: Path) -> None:
    """The GPU image's worker with PAROTID_REQUIRE_GPU=1 (its real setting) on a machine with no GPU: exit 3 and a
    message that says what to check, before any job is taken."""
    resolved, host = stack
    env = {**service_env(resolved, "worker", host), "PAROTID_REQUIRE_GPU": "1", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(
        service_argv(resolved, "worker", host), env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 3, res.stderr[-3000:]
    assert "error[NO_GPU]" in res.stderr and "container toolkit" in res.stderr


@pytest.mark.parametrize("name", ["api", "listener"])
def test_unwritable_data_volume_is_refused(stack: tuple[dict, Host], name: str) -> None:
    """A job store the container cannot write (a volume or NFS export owned by another uid): exit 2 at once, with
    the setting named, instead of failing on the first job. (A folder below a regular file is unwritable even for
    root, which runs the CI.)"""
    resolved, host = stack
    blocker = host.root / "not-a-folder"
    blocker.write_text("")
    key = "PAROTID_JOB_DIR" if name == "api" else "PAROTID_LISTENER_SPOOL_DIR"
    env = {**service_env(resolved, name, host), key: str(blocker / "sub")}
    res = subprocess.run(
        service_argv(resolved, name, host), env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert f"error[CONFIG]: {key}={blocker / 'sub'} is not a writable directory" in res.stderr
