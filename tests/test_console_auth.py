"""The console's locks: off until configured, hashed passwords, sessions, cookies, headers, no
secret on any page. The app runs in-process (Starlette's TestClient) on the suite's real Redis;
tests/test_console_browser.py drives the same app in a real browser."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pydantic
import pytest
from starlette.testclient import TestClient

from console.app import create_app
from console.credentials import check_password, hash_password
from tests.conftest import ROOT, Stack
from uphooks.settings import Settings
from uphooks_cli.embedded import free_port

TOKEN = "robot-token-" + "0123456789abcdef" * 3
SECRET = "whsec_dGhpcyBpcyBhIHNpZ25pbmcgc2VjcmV0IQ"
HOST = "https://testserver"


def settings(redis_url: str, prefix: str, **overrides: object) -> Settings:
    users = ",".join(
        [
            f"ops:operator:{hash_password('ops password 123', log2_n=10)}",
            f"viewer:read-only:{hash_password('viewer password 1', log2_n=10)}",
        ]
    )
    values: dict[str, object] = {
        "key_prefix": prefix,
        "console_users": users,
        "console_tokens": f"robot:operator:{TOKEN}",
        "console_login_attempts": 3,
        "secrets": SECRET,
        "forward_secret": "whsec_Zm9yd2FyZCBzZWNyZXQgbmV2ZXIgc2hvd24",
        "admin_port": 0,
    }
    return Settings(UPHOOKS_REDIS_URL=redis_url, **(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    client = Stack(redis_url, ROOT).client()
    keys = list(client.scan_iter(f"{name}*", count=1000))
    if keys:
        client.delete(*keys)


@contextmanager
def console(s: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(s), base_url=HOST, headers={"Origin": HOST}) as client:
        yield client


def sign_in(client: TestClient, name: str, password: str) -> int:
    answer = client.post(
        "/login", data={"name": name, "password": password}, follow_redirects=False
    )
    return answer.status_code


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_the_console_refuses_to_start_without_users_or_tokens_and_says_what_to_set(
    redis_url: str,
) -> None:
    stack = Stack(redis_url, ROOT)
    result = stack.cli("console", "--port", "1")
    assert result.returncode != 0
    assert "UPHOOKS_CONSOLE_USERS" in result.stderr
    assert "UPHOOKS_CONSOLE_TOKENS" in result.stderr
    assert "uphooks console hash-password" in result.stderr


def test_a_password_is_kept_as_a_salted_scrypt_hash_that_takes_only_that_password() -> None:
    first, second = hash_password("hunter2 hunter2"), hash_password("hunter2 hunter2")
    assert first.startswith("scrypt.15.8.1.") and first != second  # salted
    assert "hunter2" not in first and "$" not in first and "," not in first
    assert check_password("hunter2 hunter2", first)
    assert not check_password("hunter2 hunter3", first)
    assert not check_password("hunter2 hunter2", "scrypt.99.8.1.AAAA.BBBB")
    assert not check_password("hunter2 hunter2", "plain text")


def test_hash_password_prints_an_entry_the_settings_accept() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uphooks_cli", "console", "hash-password", "--name", "ann"],
        input="a long password\na long password\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    entry = result.stdout.strip().splitlines()[-1]
    assert entry.startswith("ann:operator:scrypt.")
    assert "a long password" not in result.stdout
    Settings(console_users=entry)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("console_users", "ann:operator:plaintext-password", "uphooks console hash-password"),
        ("console_users", "ann:admin:scrypt.15.8.1.a.b", "role operator or read-only"),
        ("console_tokens", "robot:operator:short-token-secret", "32 characters"),
    ],
)
def test_malformed_credentials_are_refused_without_echoing_them(
    field: str, value: str, says: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert says in str(refused.value)
    assert value.rsplit(":", 1)[1] not in str(refused.value)


def test_sign_in_gives_a_strict_http_only_secure_cookie_and_pages_send_security_headers(
    redis_url: str, prefix: str
) -> None:
    with console(settings(redis_url, prefix)) as client:
        assert client.get("/events", follow_redirects=False).headers["location"] == "/login"
        answer = client.post(
            "/login", data={"name": "ops", "password": "ops password 123"}, follow_redirects=False
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-uphooks-console=")
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert flag in cookie
        page = client.get("/events")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["strict-transport-security"].startswith("max-age=")


def test_a_token_signs_in_and_every_sign_in_is_audited(redis_url: str, prefix: str) -> None:
    with console(settings(redis_url, prefix)) as client:
        assert (
            client.post("/login", data={"token": "wrong"}, follow_redirects=False).status_code
            == 401
        )
        assert (
            client.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
        )
        audit = client.get("/audit").text
        assert "robot" in audit and "wrong credentials" in audit
        assert TOKEN not in audit


def test_repeated_wrong_passwords_lock_the_name_out_even_for_the_right_one(
    redis_url: str, prefix: str
) -> None:
    with console(settings(redis_url, prefix)) as client:
        for _ in range(3):
            assert sign_in(client, "ops", "guess") == 401
        assert sign_in(client, "ops", "ops password 123") == 429
        assert sign_in(client, "viewer", "viewer password 1") == 429  # the same source too


def test_a_sign_in_post_from_another_origin_is_refused(redis_url: str, prefix: str) -> None:
    with console(settings(redis_url, prefix)) as client:
        answer = client.post(
            "/login",
            data={"name": "ops", "password": "ops password 123"},
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers


def test_no_secret_signing_key_token_or_hash_is_ever_rendered(redis_url: str, prefix: str) -> None:
    s = settings(redis_url, prefix)
    hashes = [entry.get_secret_value().split(":", 2)[2] for entry in s.console_users]
    with console(s) as client:
        assert sign_in(client, "ops", "ops password 123") == 303
        pages = ["/login", "/events", "/dead-letters", "/dead-letters/estimate", "/overview"]
        pages += ["/handlers", "/audit", "/lookup?term=x", "/events/e:none"]
        for path in pages:
            text = client.get(path).text
            for secret in (SECRET, TOKEN, "Zm9yd2FyZCBzZWNyZXQ", *hashes):
                assert secret not in text, f"{path} shows a secret"


def test_a_session_ends_when_its_user_is_removed_from_the_settings(
    redis_url: str, prefix: str
) -> None:
    with console(settings(redis_url, prefix)) as client:
        assert sign_in(client, "viewer", "viewer password 1") == 303
        cookies = dict(client.cookies)
        assert client.get("/events").status_code == 200
    without_viewer = settings(
        redis_url, prefix, console_users=f"ops:operator:{hash_password('x' * 12, log2_n=10)}"
    )
    with console(without_viewer) as client:
        client.cookies.update(cookies)
        assert client.get("/events", follow_redirects=False).status_code == 303


def test_signing_out_ends_the_session_and_needs_the_csrf_token(redis_url: str, prefix: str) -> None:
    with console(settings(redis_url, prefix)) as client:
        assert sign_in(client, "viewer", "viewer password 1") == 303
        token = csrf_of(client.get("/events").text)
        assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
        assert (
            client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
        )
        assert client.get("/events", follow_redirects=False).status_code == 303


def test_the_procfile_console_waits_quietly_when_it_is_not_configured(redis_url: str) -> None:
    """`uphooks dev` runs the whole Procfile, and one process ending would stop the others."""
    stack = Stack(redis_url, ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uphooks_cli", "console", "--optional"],
        env=stack.env(),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline()  # written once SIGTERM is handled, however slow the start
        assert said.startswith("console off:") and "UPHOOKS_CONSOLE_USERS" in said
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)  # it waits instead of ending (and stopping `uphooks dev`)
    finally:
        proc.terminate()
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_wrong_tokens_lock_out_their_source_not_every_token(redis_url: str, prefix: str) -> None:
    with console(settings(redis_url, prefix)) as client:
        for _ in range(3):
            assert client.post("/login", data={"token": "x" * 40}).status_code == 401
        assert client.post("/login", data={"token": TOKEN}).status_code == 429
        # X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
        client.headers["X-Forwarded-For"] = "198.51.100.7"
        assert client.post("/login", data={"token": TOKEN}).status_code == 429
    # Token failures have no user name to count against: only the source is counted, so
    # nobody can lock every token out from elsewhere.
    counted = Stack(redis_url, ROOT).client().keys(f"{prefix}:console:failed:*")
    assert [k.decode().split(":failed:")[1].split(":")[0] for k in counted] == ["ip"]  # type: ignore[union-attr]


def test_a_redis_that_does_not_answer_is_a_503_that_says_so_without_its_password(
    prefix: str,
) -> None:
    gone = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with console(settings(gone, prefix)) as client:
        client.cookies.set("__Host-uphooks-console", "x" * 43)
        answer = client.get("/events")
        assert answer.status_code == 503
        assert "does not answer" in answer.text and "hunter2" not in answer.text
