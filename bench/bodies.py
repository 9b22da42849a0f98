"""The deliveries the benchmarks send: 600-byte ``upload_completed`` bodies, signed as the
sender signs them, one per line of a requests file (bench/wrk.lua and bench/loadgen.py read it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import PATH, SECRET
from uphooks import signatures
from uphooks.settings import Settings

BODY_SIZE = 600


def _payload(job: str, caption: str) -> dict[str, Any]:
    return {
        "event": "upload_completed",
        "job_id": job,
        "user_email": "creator@example.com",
        "profile_username": "bench_profile",
        "platform": "instagram",
        "media_type": "video",
        "title": "A benchmark upload",
        "caption": caption,
        "result": {
            "success": True,
            "url": f"https://www.instagram.com/p/{job}/",
            "publish_id": job,
            "post_id": job,
            "error": None,
        },
        "created_at": "2024-03-15T14:30:00.000000",
    }


def make_body(job: str) -> bytes:
    """A compact ``upload_completed`` of exactly BODY_SIZE bytes for a job id of 20 characters."""
    assert len(job) == 20, job
    base = len(orjson.dumps(_payload(job, "")))
    return orjson.dumps(_payload(job, "#" * (BODY_SIZE - base)))


def verification_env() -> dict[str, str]:
    """The env that turns on signature verification, when this build of the ingress has it."""
    fields = Settings.model_fields
    if "verify" in fields:
        env = {"UPHOOKS_VERIFY": "upload-post"}
        for name in ("secrets", "webhook_secrets", "secret"):
            if name in fields:
                env[f"UPHOOKS_{name.upper()}"] = SECRET
                return env
    return {}


def signed_headers(body: bytes, now: int | None = None) -> dict[str, str]:
    """The sender's signature headers for ``body`` (uphooks/signatures.py, as the sender signs)."""
    return signatures.upload_post_headers(SECRET, body, int(time.time()) if now is None else now)


def write_requests(path: Path, tag: str, count: int, signed: bool) -> None:
    """One delivery per line with a fresh job id (so none is a duplicate), signed when asked."""
    now = int(time.time())
    base = (
        "Content-Type: application/json|User-Agent: Upload-Post-Webhooks/1.0"
        "|X-Upload-Post-Event: upload_completed"
    )
    with path.open("wb") as out:
        for i in range(count):
            body = make_body(f"{tag[:8]:>8}{i:012d}")
            headers = base
            if signed:
                signing = signed_headers(body, now)
                headers += "".join(f"|{name}: {value}" for name, value in signing.items())
            out.write(f"{PATH}\t{headers}\t".encode() + body + b"\n")
