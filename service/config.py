"""The service's one settings object (environment prefix ``PAROTID_``), validated at start-up.

Build it once in an entry point (``Settings()`` reads the environment) and pass it down: ``create_app(settings)``,
``create_celery(settings)``, ``JobService.from_settings(settings, make_dispatcher)``. Nothing imports a global instance.

Unsafe or inconsistent values are refused with a message naming the setting: an API key given in plain text
instead of its SHA-256, a broker that is not Redis, a Redis visibility timeout not above the longest job (Redis
would deliver a long job a second time while it still runs), non-positive limits.

API keys are stored hashed. ``PAROTID_API_KEYS`` holds ``owner=sha256:<64 hex>`` entries separated by commas or
whitespace; ``PAROTID_API_KEYS_FILE`` names a file with one ``owner sha256:<64 hex>`` line per key (``#`` comments).
The owner is the tenant a key acts for: a key sees only its owner's jobs; two keys with one owner (rotation) share
them. ``parotid-seg serve --new-api-key OWNER`` prints a fresh key and the line to store.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ErrorCode, spec_for
from service.model_bundle import DEFAULT_STORE
from service.pipeline.structures import StructureTemplate

GiB = 1024**3
_OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ConfigError(ValueError):
    """A setting is missing or unsafe; the message names it."""


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex digest of the UTF-8 key>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key_entries(entries: list[tuple[str, str]], source: str) -> dict[str, str]:
    """``[(owner, 'sha256:<hex>'), ...]`` -> ``{hash: owner}``; refuses plain keys and bad owner names."""
    out: dict[str, str] = {}
    for owner, digest in entries:
        if not _OWNER_RE.match(owner):
            raise ConfigError(f"{source}: owner {owner!r} must be 1-64 of A-Z a-z 0-9 . _ @ : - (starting alnum)")
        if not _HASH_RE.match(digest):
            raise ConfigError(
                f"{source}: the key for owner {owner!r} is not 'sha256:<64 lowercase hex>'; store the SHA-256 of "
                "the key, never the key itself (parotid-seg serve --new-api-key OWNER prints both)"
            )
        out[digest] = owner
    return out


def read_keys_file(path: Path) -> dict[str, str]:
    """Lines ``owner sha256:<hex>`` (blank lines and ``#`` comments ignored) -> ``{hash: owner}``."""
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise ConfigError(f"PAROTID_API_KEYS_FILE {path}:{n}: expected 'owner sha256:<hex>'")
        entries.append((parts[0], parts[1]))
    return parse_key_entries(entries, f"PAROTID_API_KEYS_FILE {path}")


class Settings(BaseSettings):
    """Every knob of the API, the workers and the job store."""

    model_config = SettingsConfigDict(
        env_prefix="PAROTID_", env_nested_delimiter="__", frozen=True, extra="ignore", validate_default=True
    )

    # storage
    job_dir: Path = Field(default=Path("var/jobs"), description="job store root (shared by the API and every worker)")
    model_store: Path = Field(default=DEFAULT_STORE, description="model bundles: <store>/<name>/<version>/")
    default_model: str | None = Field(default=None, description="NAME[:VERSION] used when a request names none")
    # read where the network loads (service.runtimes.requested_runtime, inherited by every worker process);
    # declared here so that a wrong value is refused at start-up
    runtime: Literal["auto", "tensorflow", "openvino", "onnxruntime"] = Field(
        default="auto",
        description="network runtime (service.runtimes); openvino: same masks, well under half the memory",
    )
    retention_s: int = Field(default=7 * 86400, ge=60, description="delete jobs this long after they end")
    cleanup_interval_s: int = Field(default=300, ge=1, le=86400)
    min_free_disk_bytes: int = Field(default=1 * GiB, ge=0, description="free space needed for new jobs")

    # outputs: ROI names, suffix and colours of every output (RTSTRUCT, preview, QA); env
    # PAROTID_STRUCTURES__SUFFIX=_AI, PAROTID_STRUCTURES__NAMES / __COLORS as JSON objects keyed by model label
    structures: StructureTemplate = Field(default_factory=StructureTemplate)

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_keys: str = Field(default="", description="owner=sha256:<hex> entries, comma or whitespace separated")
    api_keys_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # uploads
    max_upload_bytes: int = Field(default=2 * GiB, gt=0, le=64 * GiB, description="bytes per request, and extracted")
    max_upload_files: int = Field(default=5000, gt=0, le=100_000, description="files per request, zip entries too")
    zip_max_ratio: float = Field(default=200.0, ge=1.0, le=10_000.0, description="largest zip expansion ratio")

    # dispatch
    broker_url: str | None = Field(default=None, description="redis://host:port/db: Celery mode; unset: embedded pool")
    queue_name: str = Field(default="parotid-seg", pattern=r"^[A-Za-z0-9._:-]{1,100}$")
    embedded_workers: int = Field(default=1, ge=1, le=8, description="threads running jobs in embedded mode")
    embedded_queue_max: int = Field(default=32, ge=1, le=10_000, description="queued jobs before POST answers 503")
    job_time_limit_s: int = Field(default=1800, ge=5, le=86400, description="soft limit per job (Celery mode)")
    hard_limit_grace_s: int = Field(default=60, ge=1, le=3600, description="hard limit = soft limit + this")
    visibility_timeout_s: int = Field(default=7200, ge=10, description="Redis redelivery delay")
    max_redeliveries: int = Field(default=2, ge=0, le=10, description="starts after the first before a job fails")
    result_expires_s: int = Field(default=86400, ge=60)
    memory_budget_mb: int = Field(
        default=8192, ge=256, le=1 << 20, description="memory one job may need (budget.py); more: 413 TOO_LARGE"
    )
    broker_timeout_s: float = Field(default=3.0, gt=0, le=60, description="connect/publish bound before 503")

    @field_validator("job_dir", "model_store")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        p = Path(v).expanduser().resolve()
        if p == Path(p.anchor):
            raise ValueError("must not be the file-system root")
        return p

    @field_validator("broker_url")
    @classmethod
    def _redis_only(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        scheme = urlsplit(v).scheme
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"only redis:// or rediss:// brokers are supported, got {scheme or v!r}")
        return v.strip()

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"{v}: no such file")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError(
                f"PAROTID_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed the hard job time limit "
                f"(PAROTID_JOB_TIME_LIMIT_S + PAROTID_HARD_LIMIT_GRACE_S = {self.hard_time_limit_s}): Redis would "
                "deliver a running job a second time"
            )
        self.api_key_owners()  # refuse bad keys at start-up
        return self

    @property
    def hard_time_limit_s(self) -> int:
        return self.job_time_limit_s + self.hard_limit_grace_s

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_redeliveries

    @property
    def celery_mode(self) -> bool:
        return self.broker_url is not None

    def api_key_owners(self) -> dict[str, str]:
        """``{'sha256:<hex>': owner}`` from PAROTID_API_KEYS and PAROTID_API_KEYS_FILE."""
        entries = []
        for item in re.split(r"[,\s]+", self.api_keys.strip()):
            if item:
                owner, sep, digest = item.partition("=")
                if not sep:
                    raise ConfigError("PAROTID_API_KEYS: expected owner=sha256:<hex> entries")
                entries.append((owner, digest))
        owners = parse_key_entries(entries, "PAROTID_API_KEYS")
        if self.api_keys_file is not None:
            owners.update(read_keys_file(self.api_keys_file))
        return owners


def load_settings(args: argparse.Namespace, **extra: object) -> Settings:
    """Settings from the environment, with the command line's overrides (``--model-store``, ``extra`` not None).
    Shared by the ``serve`` and ``worker`` command lines."""
    overrides = {k: v for k, v in extra.items() if v is not None}
    store = getattr(args, "model_store", None)
    if store is not None and Path(store) != DEFAULT_STORE:
        overrides["model_store"] = store
    return Settings(**overrides)  # type: ignore[arg-type]


def config_error(exc: Exception, prefix: str = "PAROTID_") -> int:
    """Report refused settings as one ``error[CONFIG]: SETTING: message`` line on stderr; exit status 2.
    Shared by every app's command line (serve, worker, listen)."""
    if isinstance(exc, ValidationError):
        text = "; ".join(
            (f"{prefix}{'.'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "") + e["msg"]
            for e in exc.errors()
        )
    else:
        text = str(exc)
    print(f"error[{ErrorCode.CONFIG}]: {' '.join(text.split())}", file=sys.stderr)
    return spec_for(ErrorCode.CONFIG).exit_status
