"""Run a snippet of Python in a subprocess whose data segment (RLIMIT_DATA: heap and anonymous mappings) may grow
by only ``HEADROOM_MB`` after its imports (the snippet calls ``limit_memory()`` once it has imported what it
needs). Memory-bound checks of the hardening tests (issue 16), never timings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADROOM_MB = 300

LIMIT = f"""
import resource
def _data_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmData"):
            return int(line.split()[1]) * 1024
def limit_memory():
    cap = _data_bytes() + {HEADROOM_MB} * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
"""


def run_limited(body: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    code = LIMIT + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )
