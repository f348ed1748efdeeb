"""``parotid-seg serve``: run the HTTP API on uvicorn (embedded worker pool unless PAROTID_BROKER_URL is set).

With no API key configured (neither PAROTID_API_KEYS nor PAROTID_API_KEYS_FILE), the first start creates
``<job_dir>/../api_keys`` (mode 600) holding the SHA-256 of a new key for owner ``admin`` and prints that key once;
later starts reuse the file. ``--new-api-key OWNER`` prints a fresh key and the line to add to a keys file.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

from pydantic import ValidationError

from service.config import ConfigError, Settings, config_error, hash_api_key, load_settings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default PAROTID_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default PAROTID_PORT or 8000)")
    parser.add_argument("--new-api-key", metavar="OWNER", help="print a new API key for OWNER and its hashed line")


def new_key_line(owner: str) -> tuple[str, str]:
    key = secrets.token_urlsafe(32)
    return key, f"{owner} {hash_api_key(key)}"


def ensure_api_keys(settings: Settings) -> Settings:
    """First start without keys: create a keys file with one new key (printed once) and use it."""
    if settings.api_keys.strip() or settings.api_keys_file is not None:
        return settings
    path = settings.job_dir.parent / "api_keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key, line = new_key_line("admin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# owner sha256:<hex of the key>; add lines with: parotid-seg serve --new-api-key OWNER\n")
            fh.write(line + "\n")
        print(
            f"\nNo API key was configured: created {path} with a key for owner 'admin'.\n"
            f"Your API key (shown once, only its SHA-256 is stored):\n\n    {key}\n",
            file=sys.stderr,
            flush=True,
        )
    return settings.model_copy(update={"api_keys_file": path})


def run(args: argparse.Namespace) -> int:
    if args.new_api_key:
        key, line = new_key_line(args.new_api_key)
        try:
            Settings(api_keys=line.replace(" ", "="))  # validates the owner name
        except (ValidationError, ConfigError) as exc:
            return config_error(exc)
        print(
            f"API key for {args.new_api_key} (give it to the client; it is not stored):\n  {key}\n"
            f"line for PAROTID_API_KEYS_FILE:\n  {line}"
        )
        return 0
    try:
        settings = ensure_api_keys(load_settings(args, host=args.host, port=args.port))
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        import uvicorn

        from service.api.app import create_app

        app = create_app(settings)
    except (ValidationError, ConfigError, OSError) as exc:
        return config_error(exc)
    mode = f"Celery on {settings.queue_name}" if settings.celery_mode else "embedded worker pool"
    log.info("serving on http://%s:%d (%s; job store %s)", settings.host, settings.port, mode, settings.job_dir)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), workers=1)
    return 0
