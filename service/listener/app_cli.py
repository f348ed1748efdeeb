"""``parotid-seg listen``: run the DICOM listener until SIGINT/SIGTERM.

Settings come from ``--config FILE`` (TOML), ``PAROTID_LISTENER_*`` environment variables and the flags below
(flags win); the job store, model store and dispatcher from the service's ``PAROTID_*`` settings (embedded pool,
or Celery when ``PAROTID_BROKER_URL`` is set). See docs/listener.md.

Exit status: 0 after a clean shutdown; 2 for invalid settings (one ``error[CONFIG]: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from service.config import config_error

PEER_HELP = (
    "allow a calling AE (repeatable): AE (results stay in the job store), AE=sender:PORT[:RETURN_AE] (back to the "
    "sender's address), AE=fixed:RETURN_AE@HOST:PORT (a TPS/PACS); replaces the configured peers"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file (else $PAROTID_LISTENER_CONFIG_FILE)")
    parser.add_argument("--ae-title", help="our AE title (default PAROTID_SEG)")
    parser.add_argument("--port", type=int, help="TCP port (default 11112; 0 picks a free one)")
    parser.add_argument("--bind-host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--spool-dir", type=Path, help="spool, audit log, outbox, dead letters (default var/listener)")
    parser.add_argument("--quiet-time-s", type=float, help="a series is complete after this long without instances")
    parser.add_argument("--peer", action="append", default=[], metavar="SPEC", help=PEER_HELP)
    parser.add_argument(
        "--allow-unknown-ae",
        action="store_true",
        default=None,
        help="accept any calling AE (their results stay in the job store)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def parse_peer(spec: str) -> dict:
    """``AE``, ``AE=sender:PORT[:RETURN_AE]`` or ``AE=fixed:RETURN_AE@HOST:PORT`` -> a PeerConfig dict."""
    ae, sep, rest = spec.partition("=")
    if not sep:
        return {"ae_title": ae, "return_mode": "none"}
    mode, _, target = rest.partition(":")
    try:
        if mode == "sender":
            port, _, ret_ae = target.partition(":")
            return {
                "ae_title": ae,
                "return_mode": "sender",
                "return_port": int(port),
                "return_ae_title": ret_ae or None,
            }
        if mode == "fixed":
            ret_ae, _, hostport = target.partition("@")
            host, _, port = hostport.rpartition(":")
            return {
                "ae_title": ae,
                "return_mode": "fixed",
                "return_ae_title": ret_ae or None,
                "return_host": host,
                "return_port": int(port),
            }
    except ValueError:
        pass
    raise ValueError(f"--peer {spec!r}: expected AE, AE=sender:PORT[:RETURN_AE] or AE=fixed:RETURN_AE@HOST:PORT")


def run(args: argparse.Namespace) -> int:
    from service.listener.jobs import ServiceJobBackend
    from service.listener.listener import Listener
    from service.listener.settings import load_settings
    from service.model_bundle import DEFAULT_STORE

    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its DEBUG output is not needed and verbose
    try:
        overrides = {
            "ae_title": args.ae_title,
            "port": args.port,
            "bind_host": args.bind_host,
            "spool_dir": args.spool_dir,
            "quiet_time_s": args.quiet_time_s,
            "allow_unknown_ae": args.allow_unknown_ae,
            "peers": [parse_peer(s) for s in args.peer] or None,
        }
        settings = load_settings(args.config, **overrides)
    except (ValidationError, ValueError) as exc:
        return config_error(exc, "PAROTID_LISTENER_")
    try:
        store = args.model_store if Path(args.model_store) != DEFAULT_STORE else None
        jobs = ServiceJobBackend.from_env(model_store=store)
    except (ValidationError, ValueError) as exc:
        return config_error(exc, "PAROTID_")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    listener = Listener(settings, jobs)
    try:
        listener.start(port=settings.port)
        print(
            f"parotid-seg listen: {settings.ae_title} on {settings.bind_host}:{listener.port}, spool "
            f"{settings.spool_dir}, allowed AEs: {', '.join(settings.allowed_ae_titles) or 'any'}",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        listener.stop()
        jobs.close()
    return 0
