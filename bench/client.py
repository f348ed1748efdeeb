"""A small HTTP client for the benchmark and chaos runs (httpx; uploads stream from the files)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Submitted:
    status: int
    body: dict
    post_s: float  # request start -> response (upload, header checks, pixel hash, queueing)
    t_response: float  # time.monotonic() when the response arrived

    @property
    def job_id(self) -> str:
        return str(self.body["id"])


class Api:
    def __init__(self, port: int, key: str, timeout_s: float = 600.0) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def submit_files(self, files: list[Path]) -> Submitted:
        with contextlib.ExitStack() as stack:
            parts = [("files", (f.name, stack.enter_context(open(f, "rb")), "application/dicom")) for f in files]
            t0 = time.monotonic()
            r = self.http.post("/v1/jobs", files=parts)
            t1 = time.monotonic()
        return Submitted(r.status_code, r.json(), t1 - t0, t1)

    def submit_zip(self, zip_path: Path) -> Submitted:
        with open(zip_path, "rb") as fh:
            t0 = time.monotonic()
            r = self.http.post("/v1/jobs", files=[("files", (zip_path.name, fh, "application/zip"))])
            t1 = time.monotonic()
        return Submitted(r.status_code, r.json(), t1 - t0, t1)

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.1) -> tuple[dict, float]:
        """Poll until succeeded/failed; returns (record, time.monotonic() when the final state was seen)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                body = self.job(job_id)
            except httpx.HTTPError:
                body = {"state": "unreachable"}
            now = time.monotonic()
            if body.get("state") in ("succeeded", "failed"):
                return body, now
            if now > deadline:
                raise TimeoutError(f"job {job_id} still {body.get('state')} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def qa(self, job_id: str) -> dict:
        r = self.http.get(f"/v1/jobs/{job_id}/qa")
        r.raise_for_status()
        return r.json()

    def rtstruct(self, job_id: str) -> bytes:
        r = self.http.get(f"/v1/jobs/{job_id}/rtstruct")
        r.raise_for_status()
        return r.content

    def delete(self, job_id: str) -> None:
        self.http.delete(f"/v1/jobs/{job_id}")

    def list_jobs(self) -> list[dict]:
        r = self.http.get("/v1/jobs")
        r.raise_for_status()
        return list(r.json()["jobs"])
