"""Upload-Post's read-back API: upload history, status of one upload, profiles, retry.

Shapes follow ``../shared/upload-post-api.md``; every answer is read liberally (extra fields
kept, optional ones may be missing). The client is polite:

- a GET answered 429 or 5xx (or timed out) is tried again with exponential backoff (tenacity),
  never sooner than a ``Retry-After``, at most ``attempts`` times;
- every request counts against a budget per client (one reconcile pass, one watch): past it
  :class:`BudgetExhausted` is raised, so a pass never floods the API;
- the retry POST is never repeated here: its caller (a handler) decides, and sends an
  ``Idempotency-Key``;
- 401/403 is one line, "the API key was refused"; the key is sent in one header and scrubbed
  from every error text (provider_api.py's rule).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from uphooks.provider_api import KEY_HINT, KeyedClient, ProviderAPIError
from uphooks.retry_after import retry_after
from uphooks.settings import Settings

log = logging.getLogger("uphooks.readback")

HISTORY_PATH = "/api/uploadposts/history"
STATUS_PATH = "/api/uploadposts/status"
RETRY_PATH = "/api/uploadposts/posts/retry"
USERS_PATH = "/api/uploadposts/users"
#: The page sizes the API accepts.
LIMITS = (10, 20, 50, 100)
#: Top-level statuses after which nothing changes any more.
TERMINAL = frozenset({"completed", "failed", "not_found"})


class BudgetExhausted(ProviderAPIError):
    """This client made as many requests as it may."""


class Unavailable(ProviderAPIError):
    """429, 5xx or no answer: worth trying again later (``retry_after`` seconds, if said)."""

    def __init__(self, message: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Unavailable)


class ReadBack(KeyedClient):
    """One client, one budget. Use as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 15.0,
        budget: int = 100,
        attempts: int = 4,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout)
        self.budget = budget
        self.used = 0
        self._attempts = attempts
        self._backoff = backoff
        self._max_wait = max_wait
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ReadBack:
        key = settings.upload_post_api_key
        options.setdefault("timeout", settings.upload_post_timeout_seconds)
        return cls(settings.upload_post_api_url, key.get_secret_value() if key else "", **options)

    # -- calls ---------------------------------------------------------------------------
    def history_page(self, page: int, limit: int = 100) -> dict[str, Any]:
        """One page of the upload history, newest first."""
        if limit not in LIMITS:
            raise ValueError(f"limit must be one of {LIMITS}")
        return self._get(HISTORY_PATH, {"page": page, "limit": limit})

    def history(self, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every history item, newest first, page after page until the API has no more."""
        page = 1
        while True:
            data = self.history_page(page, limit)
            items = data.get("history")
            items = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
            yield from items
            total = data.get("total")
            if len(items) < limit or (isinstance(total, int) and page * limit >= total):
                return
            page += 1

    def status(self, *, request_id: str | None = None, job_id: str | None = None) -> dict[str, Any]:
        """The status of one upload; ``{"status": "not_found"}`` when the API does not know it."""
        params = _one_id(request_id, job_id)
        try:
            return self._get(STATUS_PATH, params)
        except ProviderAPIError as exc:
            if exc.status == 404:
                return {"status": "not_found", **params}
            raise

    def users(self) -> list[dict[str, Any]]:
        """The profiles under the key, each with its ``social_accounts``."""
        profiles = self._get(USERS_PATH, None).get("profiles")
        return [p for p in profiles if isinstance(p, dict)] if isinstance(profiles, list) else []

    def retry(
        self,
        *,
        request_id: str | None = None,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """POST the retry; the raw answer, for the caller to read (200/404/409/...). Not
        repeated here. Network failures raise :class:`Unavailable`."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._send("POST", RETRY_PATH, json=_one_id(request_id, job_id), headers=headers)

    # -- plumbing -----------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.used >= self.budget:
            raise BudgetExhausted(
                f"the request budget of this pass ({self.budget} requests to Upload-Post) is "
                "spent; the rest waits for the next pass (UPHOOKS_RECONCILE_REQUEST_BUDGET)"
            )
        self.used += 1
        return self._request(method, path, **kwargs)

    def _no_answer(self, message: str) -> ProviderAPIError:
        return Unavailable(message, None, None)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_exponential(multiplier=self._backoff, max=self._max_wait)(state)
        hint = exc.retry_after if isinstance(exc, Unavailable) else None
        return min(self._max_wait, max(backoff, hint or 0.0))

    def _get(self, path: str, params: dict[str, Any] | None) -> dict[str, Any]:
        for attempt in Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        ):
            with attempt:
                return self._read(path, self._send("GET", path, params=params))
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, path: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        detail = self._detail(response)
        if status in (401, 403):
            raise ProviderAPIError(
                f"the API key was refused (HTTP {status}{detail}). {KEY_HINT}", status
            )
        if status == 429 or status >= 500:
            raise Unavailable(
                f"Upload-Post answered HTTP {status}{detail} on GET {path}; try again later",
                status,
                retry_after(response),
            )
        if status >= 400:
            raise ProviderAPIError(
                f"Upload-Post refused GET {path} (HTTP {status}{detail})", status
            )
        return self._json_object(response, f"GET {path}")


def _one_id(request_id: str | None, job_id: str | None) -> dict[str, str]:
    if request_id:
        return {"request_id": request_id}
    if job_id:
        return {"job_id": job_id}
    raise ValueError("give a request_id or a job_id")
