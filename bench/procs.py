"""Processes for the benchmark and the chaos run: a private Redis, ``parotid-seg serve``/``worker``/``listen``
subprocesses, their logs, and their peak memory from /proc. Loopback only; every process is stopped by its id."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAROTID = str(BIN / "parotid-seg") if (BIN / "parotid-seg").exists() else "parotid-seg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of a live process (VmHWM), 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/*/stat)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    peak_rss_seen: dict[int, int] = field(default_factory=dict)  # pid -> VmHWM, kept after a child is replaced

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sample_memory(self) -> None:
        """Remember the peak RSS of the process and its children (call while they live)."""
        for pid in [self.pid, *children(self.pid)]:
            hwm = vm_hwm_bytes(pid)
            if hwm:
                self.peak_rss_seen[pid] = max(self.peak_rss_seen.get(pid, 0), hwm)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path = REPO_ROOT) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed when this process exits
    popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(name, popen, log)


def base_env(**parotid: object) -> dict[str, str]:
    """This process' environment without any PAROTID_* setting, plus ``parotid`` (lower-case names, no prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAROTID_")}
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in parotid.items():
        if value is not None:
            env[f"PAROTID_{key.upper()}"] = str(value)
    return env


def new_api_key(owner: str = "bench") -> tuple[str, str]:
    """(key, 'owner=sha256:<hex>') for PAROTID_API_KEYS."""
    key = secrets.token_urlsafe(24)
    return key, f"{owner}=sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def start_redis(data_dir: Path, log_dir: Path, port: int | None = None, appendonly: bool = True) -> tuple[Proc, int]:
    """A private redis-server on a free loopback port (never the shared one on 6379)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--protected-mode",
        "yes",
    ]
    proc = spawn(f"redis-{port}", argv, dict(os.environ), log_dir)
    wait_until(lambda: port_open(port) or not proc.alive(), 10, f"redis-server on port {port}")
    if not proc.alive():
        raise RuntimeError(f"redis-server failed to start: {proc.log_text()[-500:]}")
    return proc, port


def start_serve(env: dict[str, str], log_dir: Path, port: int, name: str = "serve") -> Proc:
    import httpx

    proc = spawn(name, [PAROTID, "serve", "--host", "127.0.0.1", "--port", str(port)], env, log_dir)

    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited: {proc.log_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 120, f"{name} on port {port}", 0.25)
    return proc


def start_worker(env: dict[str, str], log_dir: Path, name: str) -> Proc:
    proc = spawn(name, [PAROTID, "worker", "--hostname", f"{name}@bench"], env, log_dir)

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited: {proc.log_text()[-2000:]}")
        return " ready." in proc.log_text()

    wait_until(ready, 120, f"{name} ready", 0.25)
    return proc


def start_listener(env: dict[str, str], log_dir: Path, port: int, name: str = "listen") -> Proc:
    """``parotid-seg listen`` (settings in ``env``: PAROTID_LISTENER_*, and the service's PAROTID_*)."""
    proc = spawn(name, [PAROTID, "listen", "--bind-host", "127.0.0.1", "--port", str(port)], env, log_dir)

    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited: {proc.log_text()[-2000:]}")
        return port_open(port)

    wait_until(up, 120, f"{name} on port {port}", 0.2)
    return proc


def start_storescp(ae_title: str, port: int, out_dir: Path, log_dir: Path) -> Proc:
    """DCMTK ``storescp`` (an outside DICOM peer: the planning system receiving the RTSTRUCT)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        f"storescp-{ae_title}-{port}",
        ["storescp", "-aet", ae_title, "-od", str(out_dir), str(port)],
        dict(os.environ),
        log_dir,
    )
    wait_until(lambda: port_open(port) or not proc.alive(), 10, f"storescp on port {port}")
    if not proc.alive():
        raise RuntimeError(f"storescp failed: {proc.log_text()[-500:]}")
    return proc
