"""The corpus' data model: one ``Case`` per malformed or hostile input, with what each channel must answer.

A case carries the request to send over HTTP (``HttpCall``) and what the API must answer (``HttpExpect``), and,
where the input is DICOM-shaped, the files a DICOM peer sends in one association (``DicomSend``) and what the
listener must do (``DicomExpect``); otherwise ``dicom_na`` says why the case does not apply to DICOM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

FilePart = tuple[str, tuple[str, bytes, str]]  # ("files" | "reference", (file name, bytes, content type))

AUTH_KEY = "valid"  # HttpCall.auth: send the test's valid API key


@dataclass
class HttpCall:
    """One ``POST /v1/jobs``. ``auth``: AUTH_KEY, None (no header) or a raw Authorization header value."""

    files: list[FilePart] | None = None
    data: dict[str, str] | None = None
    content: bytes | None = None
    stream: Callable[[], Iterator[bytes]] | None = None  # a body without Content-Length
    content_type: str | None = None  # for ``content`` / ``stream``
    auth: str | None = AUTH_KEY


@dataclass(frozen=True)
class HttpExpect:
    """The POST's status and error code; for 202, the job's final state and, if it failed, the job's error code."""

    status: int
    code: str | None = None
    job: str | None = None  # "succeeded" | "failed" (202 only)

    def label(self) -> str:
        if self.status == 202:
            return f"202, job {self.job}" + (f" `{self.code}`" if self.code else "")
        return f"{self.status} `{self.code}`"


@dataclass
class DicomSend:
    """Files sent as they are (bytes from the file, no re-encoding) in one association."""

    files: list[Path]
    calling_ae: str = "SCANNER"
    called_ae: str = "PAROTID_SEG"


NO_CONTEXT = "no context"  # the SCU could not send: the SCP accepted no presentation context for it
DROPPED = "0x0000 dropped"  # Success for a non-CT storage object of a study send: accepted, not kept


@dataclass(frozen=True)
class DicomExpect:
    """``association``: accepted | rejected. ``statuses``: C-STORE status label -> count ("0x0000", "0xA900", ...,
    or NO_CONTEXT, or DROPPED). ``outcomes``: per stored series (sorted): "succeeded", "failed:CODE" (the job failed),
    "rejected:CODE" (the listener's submission was refused by the pipeline's checks), "refused:REASON" (the listener
    refused the rest of the series while it arrived and dropped what it had spooled); () when nothing was stored."""

    association: str = "accepted"
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: tuple[str, ...] = ()

    def label(self) -> str:
        if self.association == "rejected":
            return "association rejected"
        st = ", ".join(f"{n} x {s}" for s, n in self.statuses.items())
        if not self.outcomes:
            return f"{st}; nothing spooled, no job"
        return f"{st}; " + ", ".join(_outcome_label(o) for o in self.outcomes)


def _outcome_label(outcome: str) -> str:
    kind, _, code = outcome.partition(":")
    return {
        "succeeded": "job succeeded",
        "failed": f"job failed `{code}`",
        "rejected": f"`job_rejected` `{code}`",
        "refused": f"`series_refused` `{code}`, spooled part dropped",
    }[kind]


@dataclass
class Case:
    name: str
    what: str
    http: HttpCall
    http_expect: HttpExpect
    dicom: DicomSend | None = None
    dicom_expect: DicomExpect | None = None
    dicom_na: str = ""
    gap: str = ""  # where today's behaviour (what the tests assert) falls short of what it should be

    def __post_init__(self) -> None:
        if (self.dicom is None) != (self.dicom_expect is None) or (self.dicom is None) == (not self.dicom_na):
            raise ValueError(f"case {self.name}: give dicom + dicom_expect, or dicom_na")


def markdown_table(cases: list[Case]) -> str:
    """The corpus as a Markdown table (case, input, HTTP result, DICOM result)."""
    lines = [
        "| # | case | input | HTTP (`POST /v1/jobs`) | DICOM (C-STORE to the listener) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, c in enumerate(cases, 1):
        dicom = c.dicom_expect.label() if c.dicom_expect else f"n/a: {c.dicom_na}"
        gap = f" **(gap {n})**" if c.gap else ""
        lines.append(f"| {n} | `{c.name}` | {c.what}{gap} | {c.http_expect.label()} | {dicom} |")
    gaps = [f"- gap {n}, `{c.name}`: {c.gap}" for n, c in enumerate(cases, 1) if c.gap]
    if gaps:
        lines += [
            "",
            "Known gaps (the tests assert today's behaviour, so fixing one means updating its case):",
            "",
            *gaps,
        ]
    return "\n".join(lines) + "\n"
