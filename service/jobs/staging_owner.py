"""Which process owns a staging folder, so that uploads interrupted by a crash are removed at the next start
instead of keeping patient files for ``STAGING_MAX_AGE_S`` (issue 16).

``new_staging`` writes ``.owner`` (host name, pid, and the process's start time from /proc, which tells a reused
pid apart). At start-up (``JobStore.prepare``) and in every clean-up, a staging folder whose owner ran on this
host and is no longer alive is removed; folders of other hosts (a shared job store) are left to the age rule.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

OWNER_FILE = ".owner"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime (after the command name in parentheses)


def write_owner(folder: Path) -> None:
    pid = os.getpid()
    (folder / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}))


def owner_gone(folder: Path) -> bool:
    """True when ``folder``'s owner ran on this host and has ended (False when unknown or elsewhere)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        host, pid, start = owner["host"], int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return False
    now = _start_time(pid)
    return now is None or (start is not None and now != start)
