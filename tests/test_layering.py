"""The layering of ``service`` (README "Architecture", docs/architecture.md), read from the source with ``ast``.

cli -> {api, listener, worker} -> jobs -> pipeline -> errors. Imports inside functions count as much as those at
the top of a module. ``service/cli.py`` reaches the apps through ``importlib`` by name, which is how the top of the
order is meant to use them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("service", "training", "bench", "docker", "scripts")

# (files the rule applies to, as a path prefix, exempt path prefixes, forbidden module prefixes, why)
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...], str]] = [
    ("", ("service/api/",), ("service.api",), "nothing outside service/api imports service.api"),
    ("service/jobs/", (), ("service.worker",), "service.jobs is given a dispatcher; it never imports service.worker"),
    ("service/", (), ("training",), "the service never imports the training package"),
    (
        "service/pipeline/",
        (),
        ("service.api", "service.worker", "service.listener", "service.jobs", "service.cli"),
        "the pipeline is pure stages: no apps, no job layer",
    ),
]


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` (a file in ``package``), nested ones included."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]  # from service import api
    return out


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rel_path: str, source: str) -> list[str]:
    package = rel_path.rsplit("/", 1)[0].replace("/", ".")
    found = []
    for applies_to, exempt, forbidden, why in RULES:
        if not rel_path.startswith(applies_to) or rel_path.startswith(exempt):
            continue
        for line, name in imported_modules(source, package):
            if any(_matches(name, f) for f in forbidden):
                found.append(f"{rel_path}:{line} imports {name} ({why})")
    return found


def source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS if (ROOT / d).is_dir() for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50, "the source tree was not found"
    return files


def test_the_source_keeps_its_layers():
    found = []
    for path in source_files():
        found += violations(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    assert not found, "layering broken:\n" + "\n".join(sorted(set(found)))


@pytest.mark.parametrize(
    ("rel_path", "source"),
    [
        ("service/listener/jobs.py", "def f():\n    from service.api.app import create_app\n"),
        ("service/worker/app_cli.py", "import service.api.app_cli\n"),
        ("service/cli.py", "from service import api\n"),
        ("service/jobs/service.py", "from service.worker.dispatcher import make_dispatcher\n"),
        ("service/jobs/store.py", "from ..worker import runner\n"),
        ("service/model_bundle.py", "import training.export\n"),
        ("service/pipeline/segment.py", "from service.jobs.models import JobState\n"),
        ("service/pipeline/infer.py", "from .. import listener\n"),
        ("training/train.py", "from service.api.errors import ApiError\n"),
    ],
)
def test_the_check_catches_each_kind_of_violation(rel_path: str, source: str):
    assert violations(rel_path, source)


@pytest.mark.parametrize(
    ("rel_path", "source"),
    [
        ("service/api/app.py", "from service.api.errors import install_error_handlers\n"),
        ("service/api/app.py", "from service.worker.dispatcher import make_dispatcher\n"),
        ("service/listener/jobs.py", "from service.jobs.service import JobService\n"),
        ("service/pipeline/segment.py", "from service.pipeline.plan import Plan\nfrom service.errors import X\n"),
        ("service/jobs/service.py", "from service.jobs.dispatch import Dispatcher\n"),
        ("training/train.py", "from service.pipeline.plan import Plan\n"),
    ],
)
def test_the_check_allows_the_intended_direction(rel_path: str, source: str):
    assert violations(rel_path, source) == []
