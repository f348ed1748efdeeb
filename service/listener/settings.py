"""Listener settings: one pydantic-settings object, env prefix ``PAROTID_LISTENER_``, optional TOML file.

Precedence, highest first: values passed in code (the CLI flags), environment variables, the TOML file
(``--config FILE`` or ``PAROTID_LISTENER_CONFIG_FILE``), defaults. Unsafe or inconsistent values are refused at
start-up with a message naming the setting. ``peers`` (the calling-AE allow-list and where each peer's results go)
is a list of tables in TOML, or JSON in ``PAROTID_LISTENER_PEERS``.
"""

from __future__ import annotations

import os
import ssl
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

_AE_CHARS = set(string.ascii_letters + string.digits + string.punctuation + " ") - {"\\"}


def check_ae_title(value: str) -> str:
    """An AE title: 1-16 characters of the DICOM default repertoire, no backslash, not only spaces."""
    stripped = value.strip()
    if not stripped or len(value) > 16 or not set(value) <= _AE_CHARS:
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
    return stripped


class PeerConfig(BaseModel):
    """One allowed calling AE and where its results go.

    ``return_mode``: ``sender`` sends the RTSTRUCT back to the peer address of the association that delivered the
    series, at ``return_port`` (AE title ``return_ae_title``, default the calling AE title); ``fixed`` sends it to
    ``return_host:return_port`` (a TPS or PACS); ``none`` keeps it in the job store only. ``return_tls`` sends
    over TLS, verifying the destination's certificate (against ``return_tls_ca_file`` of the listener, else the
    system's trust store) and its host name or IP address. ``review_before_send`` keeps the RTSTRUCT until a
    reviewer approves it in the review workstation (``/ui``); a rejected result is never sent.

    ``on_resend``: what a series this peer sends again (same series, same pixel data, same model) gets once its
    job has succeeded: ``redeliver`` (default) sends the existing RTSTRUCT again without recomputing (a planning
    system user who deleted the structure set just sends the CT again); ``ignore`` sends nothing; ``recompute``
    runs a new job (the old one stays in the job store) and delivers its result.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ae_title: str
    return_mode: Literal["sender", "fixed", "none"] = "sender"
    return_ae_title: str | None = None
    return_host: str | None = None
    return_port: int | None = Field(None, ge=1, le=65535)
    return_tls: bool = False
    review_before_send: bool = False
    # QA delivery policy: hold results whose QA status is at least this until a reviewer approves them (the same
    # hold as review_before_send); "none" delivers every result. Default: a QA `fail` is never sent unreviewed.
    qa_hold: Literal["none", "fail", "review"] = "fail"
    on_resend: Literal["redeliver", "ignore", "recompute"] = "redeliver"

    @field_validator("ae_title", "return_ae_title")
    @classmethod
    def _ae(cls, v: str | None) -> str | None:
        return None if v is None else check_ae_title(v)

    @model_validator(mode="after")
    def _destination(self) -> PeerConfig:
        if self.return_mode == "fixed" and (not self.return_host or self.return_port is None):
            raise ValueError(f"peer {self.ae_title}: return_mode 'fixed' needs return_host and return_port")
        if self.return_mode == "sender" and self.return_port is None:
            raise ValueError(f"peer {self.ae_title}: return_mode 'sender' needs return_port (the sender's SCP port)")
        return self


class ListenerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAROTID_LISTENER_", extra="forbid", toml_file=None)

    # --- identity and network
    ae_title: str = "PAROTID_SEG"
    bind_host: str = "0.0.0.0"
    port: int = Field(11112, ge=0, le=65535)  # 0: any free port (the start-up line names it)
    require_called_ae: bool = True  # reject associations addressed to another AE title
    max_associations: int = Field(10, ge=1, le=200)
    network_timeout_s: float = Field(60.0, gt=0)
    # per calling AE title: associations open at once (one more: A-ASSOCIATE-RJ transient, local limit exceeded),
    # and how long an association that has sent no DIMSE message yet may stay idle (then A-ABORT)
    max_associations_per_peer: int = Field(4, ge=1, le=200)
    idle_association_timeout_s: float = Field(10.0, gt=0, le=3600)
    # connections that have not yet sent a whole A-ASSOCIATE-RQ: at most this many (a new one evicts the oldest),
    # each for at most artim_timeout_s (the ARTIM timer; also the A-ASSOCIATE/A-RELEASE answer timeout)
    max_pending_connections: int = Field(32, ge=1, le=1000)
    artim_timeout_s: float = Field(10.0, gt=0, le=600)
    # --- who may send, and where results go
    peers: list[PeerConfig] = Field(default_factory=list)
    allow_unknown_ae: bool = False  # True accepts any calling AE; its results stay in the job store
    # --- TLS (both cert and key, or neither); a CA file makes client certificates mandatory
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    # --- TLS on the return path (peers with return_tls): CA certificates that sign the destinations' certificates
    # (default: the system's trust store); our tls_cert_file/tls_key_file, when set, is the client certificate
    return_tls_ca_file: Path | None = None
    # --- storage
    spool_dir: Path = Path("var/listener")
    min_free_disk_bytes: int = Field(2**30, ge=0)  # the unit of the service's PAROTID_MIN_FREE_DISK_BYTES
    min_free_disk_mb: float | None = Field(None, ge=0)  # its older name, in MiB: still read, converted to bytes
    # memory one job may need (service/pipeline/budget.py), checked on every C-STORE from the headers received so
    # far (0xA700 once a series is over it); None: the job service's memory_budget_mb (PAROTID_MEMORY_BUDGET_MB)
    memory_budget_mb: int | None = Field(None, ge=1, le=1 << 20)
    # --- series completeness
    quiet_time_s: float = Field(30.0, gt=0)
    release_grace_s: float = Field(5.0, ge=0)
    partial_timeout_s: float = Field(600.0, gt=0)
    finished_retention_s: float = Field(3600.0, gt=0)
    # --- jobs
    model: str | None = None  # NAME[:VERSION]; default the promoted bundle
    poll_interval_s: float = Field(1.0, gt=0)
    # --- return path
    delivery_attempts: int = Field(5, ge=1, le=100)
    delivery_backoff_s: float = Field(10.0, gt=0)
    delivery_backoff_max_s: float = Field(600.0, gt=0)
    delivery_timeout_s: float = Field(30.0, gt=0)
    delivery_workers: int = Field(4, ge=1, le=64)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return check_ae_title(v)

    @model_validator(mode="after")
    def _consistent(self) -> ListenerSettings:
        if self.min_free_disk_mb is not None:
            if "min_free_disk_bytes" in self.model_fields_set:
                raise ValueError("min_free_disk_mb is the older name of min_free_disk_bytes: set only one")
            self.min_free_disk_bytes = int(self.min_free_disk_mb * 2**20)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_ca_file (client certificates) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file", "return_tls_ca_file"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ValueError(f"{name}: {p} is not a file")
        titles = [p.ae_title for p in self.peers]
        dupes = sorted({t for t in titles if titles.count(t) > 1})
        if dupes:
            raise ValueError(f"peers: AE title(s) listed more than once: {', '.join(dupes)}")
        if not self.peers and not self.allow_unknown_ae:
            raise ValueError(
                "no peers configured and allow_unknown_ae is false: every association would be "
                "rejected; list the calling AE titles in 'peers'"
            )
        if self.return_tls_ca_file is not None and not any(p.return_tls for p in self.peers):
            raise ValueError("return_tls_ca_file is set but no peer has return_tls = true")
        try:
            self.return_tls_context()
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"return path TLS: cannot load return_tls_ca_file or tls_cert_file/tls_key_file ({exc})"
            ) from exc
        if self.delivery_backoff_max_s < self.delivery_backoff_s:
            raise ValueError("delivery_backoff_max_s must be >= delivery_backoff_s")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    def peer(self, calling_ae: str) -> PeerConfig | None:
        """The configuration of an allowed calling AE, or None (unknown AE)."""
        calling_ae = calling_ae.strip()
        return next((p for p in self.peers if p.ae_title == calling_ae), None)

    def return_tls_context(self) -> ssl.SSLContext | None:
        """The client-side TLS context of the return path (None when no peer uses TLS)."""
        if not any(p.return_tls for p in self.peers):
            return None
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.return_tls_ca_file) if self.return_tls_ca_file else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            ctx.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
        return ctx

    @property
    def allowed_ae_titles(self) -> list[str]:
        return [p.ae_title for p in self.peers]


def load_settings(config_file: Path | None = None, **overrides: Any) -> ListenerSettings:
    """Build the settings from ``overrides`` > environment > TOML ``config_file`` > defaults.

    ``config_file`` defaults to ``$PAROTID_LISTENER_CONFIG_FILE``. ``None`` overrides are ignored.
    """
    if config_file is None and os.environ.get("PAROTID_LISTENER_CONFIG_FILE"):
        config_file = Path(os.environ["PAROTID_LISTENER_CONFIG_FILE"])
    if config_file is not None and not Path(config_file).is_file():
        raise ValueError(f"listener config file {config_file} does not exist")
    cls: type[ListenerSettings] = ListenerSettings
    if config_file is not None:
        cfg = dict(ListenerSettings.model_config)
        cfg["toml_file"] = Path(config_file)
        cls = type("ListenerSettingsFromFile", (ListenerSettings,), {"model_config": cfg})
    return cls(**{k: v for k, v in overrides.items() if v is not None})
