"""Print the pip requirements of pyproject.toml (the core dependencies plus the named extras), one per line.

Used by the Dockerfiles to install the dependency layer from ``pyproject.toml`` alone, before the source is copied,
so that a change to the source does not rebuild the dependencies. Standard library only (``tomllib``, Python 3.11).

``--drop NAME`` leaves out a distribution (repeatable): the GPU image drops ``tensorflow-cpu`` and installs the
GPU build of TensorFlow instead. Environment markers are kept; pip evaluates them.

    python requirements.py pyproject.toml --extra service --drop tensorflow-cpu > requirements.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical_name(requirement: str) -> str:
    """The PEP 503 normalised distribution name of a requirement string ('Foo_Bar[x]>=1' -> 'foo-bar')."""
    match = _NAME_RE.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extras: list[str], drop: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra named {', '.join(unknown)} (have: {', '.join(optional)})")
    dropped = {canonical_name(d) for d in drop}
    out = []
    for req in [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]:
        if canonical_name(req) not in dropped and req not in out:
            out.append(req)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="optional-dependencies group to include")
    parser.add_argument("--drop", action="append", default=[], help="distribution to leave out")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(r + "\n" for r in requirements(args.pyproject, args.extra, args.drop)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
