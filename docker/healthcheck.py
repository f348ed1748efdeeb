"""Container health checks: ``python docker/healthcheck.py [api|worker|listener|auto] [ARG]``.

Exit 0 when healthy, 1 when not (Docker's HEALTHCHECK contract), with one line on stdout saying why. The settings
come from the same environment as the service (``PAROTID_*``), so the check probes what the service really uses.

- ``api``: ``GET /healthz`` on the API's port (``PAROTID_PORT``) answers 200. Liveness only: ``/readyz`` (broker,
  model, disk) is for load balancers and monitoring, a broker outage must not mark the API container unhealthy.
- ``worker [NODE]``: the Celery worker node NODE, by default any node ``*@<hostname>`` (``parotid-seg worker``
  names itself ``parotid-<pid>@<hostname>``; a container's hostname is its own), answers a ``ping`` over the
  broker. The worker's parent process answers while its child runs a job, so a long job does not make it
  unhealthy.
- ``listener``: a DICOM association to the listener (``PAROTID_LISTENER_*`` or its TOML file, with TLS when the
  listener uses it) with calling AE title ``PAROTID_HEALTH``: a C-ECHO success, or a DICOM rejection of the
  association (an unlisted calling AE), shows that the listener's DICOM layer answers; a refused or silent port
  does not. Each check is one line in the listener's audit log (calling AE ``PAROTID_HEALTH`` from 127.0.0.1).
- ``auto`` (default; the images' HEALTHCHECK): the role is read from PID 1's command line (the entrypoint's
  ``serve``/``worker``/``listen``); any other command (a one-off ``models list``) counts as healthy.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 8.0
PING_TIMEOUT_S = 5.0
HEALTH_AE_TITLE = "PAROTID_HEALTH"
ROLES_BY_COMMAND = {"serve": "api", "worker": "worker", "listen": "listener"}


def _local_host(bind_host: str) -> str:
    """The address to probe a server bound to ``bind_host`` at (the wildcard binds mean loopback)."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


def check_api() -> tuple[bool, str]:
    host = _local_host(os.environ.get("PAROTID_HOST", "127.0.0.1"))
    port = int(os.environ.get("PAROTID_PORT", "8000"))
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 (fixed http URL)
            body = json.loads(resp.read() or b"{}")
            return resp.status == 200, f"{url}: HTTP {resp.status} {body}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def check_worker(node: str | None = None) -> tuple[bool, str]:
    """Ping the worker node ``node``, or any node ``*@<this hostname>`` (``parotid-seg worker`` names itself
    ``parotid-<pid>@<hostname>``, and a container's hostname is its own)."""
    from service.config import Settings
    from service.worker.celery_app import broker_label, create_celery

    settings = Settings()
    if settings.broker_url is None:
        return False, "PAROTID_BROKER_URL is not set: there is no Celery worker to ask"
    target = node or f"*@{socket.gethostname()}"
    app = create_celery(settings)
    try:
        if node:
            replies = app.control.ping(destination=[node], timeout=PING_TIMEOUT_S)
        else:
            replies = app.control.ping(pattern=target, matcher="glob", limit=1, timeout=PING_TIMEOUT_S)
    except Exception as exc:  # broker unreachable: kombu/redis errors, OSError
        return False, f"broker {broker_label(settings.broker_url)}: {type(exc).__name__}: {exc}"
    finally:
        app.close()
    answered = [name for reply in replies for name in reply]
    if answered:
        return True, f"worker {', '.join(answered)} answered ping via {broker_label(settings.broker_url)}"
    return False, f"no worker {target} answered ping via {broker_label(settings.broker_url)} within {PING_TIMEOUT_S} s"


def _client_tls(settings, host: str) -> tuple[ssl.SSLContext, str] | None:
    """A TLS client context for a listener that uses TLS. The check connects to its own container over loopback,
    so it does not verify the server certificate; when the listener requires client certificates
    (``tls_ca_file``), it presents the listener's own certificate and key, which the listener accepts when their
    issuer is in ``tls_ca_file``."""
    if settings.tls_cert_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if settings.tls_ca_file is not None:
        ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    return ctx, host


def check_listener() -> tuple[bool, str]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from service.listener.settings import load_settings

    settings = load_settings()
    host = _local_host(settings.bind_host)
    where = f"{settings.ae_title}@{host}:{settings.port}"
    ae = AE(ae_title=HEALTH_AE_TITLE)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.connection_timeout = TIMEOUT_S
    assoc = ae.associate(host, settings.port, ae_title=settings.ae_title, tls_args=_client_tls(settings, host))
    try:
        if assoc.is_established:
            status = assoc.send_c_echo()
            code = status.get("Status") if status else None
            assoc.release()
            if code == 0x0000:
                return True, f"C-ECHO to {where}: success"
            return False, f"C-ECHO to {where}: status {code!r}"
        if assoc.is_rejected:
            return True, f"{where} answered (association rejected: {HEALTH_AE_TITLE} is not an allowed calling AE)"
        return False, f"{where}: no DICOM answer (connection refused, aborted or timed out)"
    finally:
        ae.shutdown()


def role_of_pid1(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """The role of the container's main process, from its arguments (``.../entrypoint.sh serve`` -> ``api``)."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in args:
        role = ROLES_BY_COMMAND.get(arg.decode(errors="replace"))
        if role is not None:
            return role
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    role = args[0] if args else "auto"
    if role == "auto":
        detected = role_of_pid1()
        if detected is None:
            print("healthy: the container runs no long-lived parotid-seg service")
            return 0
        role = detected
    checks = {"api": check_api, "worker": lambda: check_worker(*args[1:2]), "listener": check_listener}
    if role not in checks:
        print(f"unknown role {role!r}: expected api, worker, listener or auto")
        return 1
    try:
        ok, detail = checks[role]()
    except Exception as exc:  # a broken configuration is unhealthy, with the reason
        ok, detail = False, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    print(("healthy: " if ok else "UNHEALTHY: ") + detail)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
