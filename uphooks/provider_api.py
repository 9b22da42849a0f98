"""Upload-Post's API client for the notification settings (read and changed by ``uphooks
upload-post``, whose body and lines are uphooks_cli/notifications.py); its error wording and key
handling are shared by the read-back client (readback.py) that the workers and handlers use.

The provider's docs page (``docs/provider-facts.md``, "Configuration via API") documents one
call: ``POST /api/uploadposts/users/notifications`` with ``Authorization: Apikey <key>`` and a
JSON body of ``channels``, ``webhook_url``, ``telegram_chat_id`` and ``webhook_events``; the
answer is ``{"success": true, "notifications": {...}}``. Two more things are used here, and say
so where they are used:

- reading the settings: ``GET`` on the same path. The page does not show it (the provider's own
  tooling reads "the current notification settings", so a read exists); when the API refuses
  the GET the error says so, and ``set`` still prints the settings its POST returns.
- only the fields given are sent (the provider's tooling describes a change as "only the fields
  sent"). ``channels`` is sent whole, the current value with the change applied, so turning the
  webhook on never turns Telegram off by omission.

A *test send* ("send a sample ``upload_completed`` through the configured channels") exists in
the provider's tooling but has no documented endpoint, so it is not called; ``uphooks
upload-post test`` checks the settings and can post a signed sample itself.

The API key is never printed: it is sent in one header, and scrubbed from any error text.
"""

from __future__ import annotations

from typing import Any, Self

import httpx

from uphooks.errors import UphooksError

NOTIFICATIONS_PATH = "/api/uploadposts/users/notifications"
KEY_HINT = (
    "Check UPHOOKS_UPLOAD_POST_API_KEY: create or copy an API key in the Upload-Post dashboard."
)


class ProviderAPIError(UphooksError):
    """The API call failed; the message is written for the person running the command."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _message_of(response: httpx.Response) -> str:
    """The API's own explanation, if it gave one."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text and "<html" not in text[:200].lower() else ""
    if isinstance(data, dict):
        for name in ("message", "error", "detail", "msg", "reason"):
            value = data.get(name)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail")
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, list) and value:
                return "; ".join(str(v) for v in value)[:300]
    return ""


class KeyedClient:
    """An HTTP client of Upload-Post's API: the key sent in one header and scrubbed from every
    error text, an answer read as one JSON object. Use as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ProviderAPIError(f"no Upload-Post API key is set. {KEY_HINT}")
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Apikey {api_key}",
                "Accept": "application/json",
                "User-Agent": "uphooks",
            },
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; no answer (a timeout, no connection) raises :meth:`_no_answer`."""
        where = f"{method} {self.base_url}{path}"
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise self._no_answer(
                f"Upload-Post did not answer in time ({where}); try again later"
            ) from exc
        except httpx.HTTPError as exc:
            raise self._no_answer(
                self.scrub(f"could not reach Upload-Post ({where}): {exc}")
            ) from exc

    def _no_answer(self, message: str) -> ProviderAPIError:
        return ProviderAPIError(message)

    def _detail(self, response: httpx.Response) -> str:
        """The API's own explanation as ``": <text>"`` (the key scrubbed), or ""."""
        said = self.scrub(_message_of(response))
        return f": {said}" if said else ""

    def _json_object(self, response: httpx.Response, answered: str) -> dict[str, Any]:
        """The answer's JSON object; ``answered`` (``HTTP 200``, ``GET <path>``) for errors."""
        status = response.status_code
        try:
            data = response.json()
        except ValueError as exc:
            kind = response.headers.get("content-type", "no content type")
            raise ProviderAPIError(
                f"Upload-Post answered {answered} with something that is not JSON ({kind}); "
                f"is UPHOOKS_UPLOAD_POST_API_URL ({self.base_url}) right?",
                status,
            ) from exc
        if not isinstance(data, dict):
            raise ProviderAPIError(
                f"Upload-Post answered {answered} with {type(data).__name__}", status
            )
        return data


class UploadPostAPI(KeyedClient):
    # -- calls ---------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The current notification settings (``GET``, see the module docstring)."""
        return self._call("GET", None)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Send ``changes`` (documented ``POST``); returns the settings the API answers with."""
        return self._call("POST", changes)

    # -- plumbing -----------------------------------------------------------------------
    def _call(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        response = self._request(method, NOTIFICATIONS_PATH, json=body)
        return self._answer(method, f"{method} {self.base_url}{NOTIFICATIONS_PATH}", response)

    def _answer(self, method: str, where: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        detail = self._detail(response)
        if status in (401, 403):
            raise ProviderAPIError(
                f"Upload-Post refused the API key (HTTP {status}{detail}). {KEY_HINT}", status
            )
        if method == "GET" and status in (404, 405):
            raise ProviderAPIError(
                f"Upload-Post does not let this key read the settings with {where} (HTTP "
                f"{status}{detail}). Its docs only describe changing them (POST); `uphooks "
                "upload-post set` prints the settings the API answers with.",
                status,
            )
        if status == 429:
            wait = response.headers.get("retry-after")
            raise ProviderAPIError(
                f"Upload-Post is rate limiting this key (HTTP 429{detail}); try again "
                + (f"in {wait} s" if wait else "later"),
                status,
            )
        if status >= 500:
            raise ProviderAPIError(
                f"Upload-Post failed (HTTP {status}{detail}) on {where}; "
                + ("nothing may have changed. " if method == "POST" else "")
                + "Try again later.",
                status,
            )
        if status >= 400:
            raise ProviderAPIError(
                f"Upload-Post refused the request (HTTP {status}{detail}).", status
            )
        data = self._json_object(response, f"HTTP {status}")
        if data.get("success") is False:
            raise ProviderAPIError(
                f"Upload-Post did not apply it (success: false{detail or ''}).", status
            )
        notifications = data.get("notifications")
        if isinstance(notifications, dict):
            return notifications
        return {k: v for k, v in data.items() if k != "success"}
