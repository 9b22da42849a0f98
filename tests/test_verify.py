"""receiver/verify.py, allowed_networks.py and limits.py on their own: no server, no Redis.

Signatures are built here by hand (hmac, base64), not with the module's own helpers, except where
a helper is itself under test; the Standard Webhooks case uses the specification's published test
vector.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from ipaddress import ip_address, ip_network

import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers

from receiver.allowed_networks import AllowedNetworks, parse_address
from receiver.limits import LogThrottle, too_deep
from receiver.verify import (
    Failed,
    Passed,
    Pending,
    Reason,
    Verifier,
)
from uphooks import signatures
from uphooks.errors import ConfigurationError
from uphooks.settings import Settings

NOW = 1_700_000_000
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = b'{"event":"upload_completed","job_id":"j1"}'

# The Standard Webhooks specification's published test vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def verifier(*modes: str, secrets: tuple[str, ...] = (SECRET,), **settings: object) -> Verifier:
    return Verifier.from_settings(Settings(verify=list(modes), secrets=list(secrets), **settings))


def upload_post_headers(key: bytes, body: bytes, ts: int = NOW, **extra: str) -> Headers:
    digest = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return Headers(
        {"x-upload-post-timestamp": str(ts), "x-upload-post-signature": f"sha256={digest}", **extra}
    )


def check(
    v: Verifier,
    headers: Headers,
    body: bytes = BODY,
    *,
    now: float = NOW,
    path_token: str | None = None,
) -> Passed | Failed:
    return v.check(headers, body, path_token, now)


# -- upload-post -------------------------------------------------------------------------------


def test_upload_post_accepts_a_signature_keyed_with_the_whole_secret_string() -> None:
    verdict = check(verifier("upload-post"), upload_post_headers(SECRET.encode(), BODY))
    assert verdict == Passed("upload-post", None, NOW)


def test_upload_post_also_accepts_the_base64_decoded_key_since_the_scheme_is_unconfirmed() -> None:
    verdict = check(verifier("upload-post"), upload_post_headers(b"k" * 32, BODY))
    assert isinstance(verdict, Passed)


def test_the_upload_post_signer_matches_the_scheme() -> None:
    headers = Headers(signatures.upload_post_headers(SECRET, BODY, NOW))
    assert headers == upload_post_headers(SECRET.encode(), BODY)


def test_upload_post_never_vouches_for_the_unsigned_delivery_id_header() -> None:
    headers = upload_post_headers(SECRET.encode(), BODY, **{"x-upload-post-delivery": "dlv_1"})
    assert check(verifier("upload-post"), headers) == Passed("upload-post", None, NOW)


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_upload_post_one_changed_body_byte_is_a_mismatch(position: int) -> None:
    headers = upload_post_headers(SECRET.encode(), BODY)
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    verdict = check(verifier("upload-post"), headers, bytes(tampered))
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MISMATCH


def test_upload_post_wrong_secret_is_a_mismatch_and_the_timestamp_is_signed_too() -> None:
    v = verifier("upload-post")
    verdict = check(v, upload_post_headers(OTHER.encode(), BODY))
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MISMATCH
    moved = dict(upload_post_headers(SECRET.encode(), BODY))
    moved["x-upload-post-timestamp"] = str(NOW + 1)
    verdict = check(v, Headers(moved))
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MISMATCH


def test_rotation_old_and_new_secret_both_pass_while_both_are_configured() -> None:
    v = verifier("upload-post", secrets=(SECRET, OTHER))
    assert isinstance(check(v, upload_post_headers(SECRET.encode(), BODY)), Passed)
    assert isinstance(check(v, upload_post_headers(OTHER.encode(), BODY)), Passed)
    third = "whsec_" + base64.b64encode(b"t" * 32).decode()
    verdict = check(v, upload_post_headers(third.encode(), BODY))
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MISMATCH
    assert "2 configured secret" in verdict.detail


def test_several_signatures_in_one_header_pass_if_any_matches() -> None:
    good = upload_post_headers(SECRET.encode(), BODY)["x-upload-post-signature"]
    bad = upload_post_headers(OTHER.encode(), BODY)["x-upload-post-signature"]
    headers = Headers(
        {"x-upload-post-timestamp": str(NOW), "x-upload-post-signature": f"{bad}, {good}"}
    )
    assert isinstance(check(verifier("upload-post"), headers), Passed)


@pytest.mark.parametrize(
    ("age", "reason"),
    [(86_400 + 1, Reason.EXPIRED), (-301, Reason.EARLY), (86_400, None), (-300, None)],
)
def test_upload_post_timestamp_window(age: int, reason: Reason | None) -> None:
    headers = upload_post_headers(SECRET.encode(), BODY, ts=NOW - age)
    verdict = check(verifier("upload-post"), headers)
    if reason is None:
        assert isinstance(verdict, Passed)
    else:
        assert isinstance(verdict, Failed) and verdict.reason is reason


def test_the_tolerance_is_a_setting() -> None:
    headers = upload_post_headers(SECRET.encode(), BODY, ts=NOW - 301)
    verdict = check(verifier("upload-post", verify_tolerance_seconds=300), headers)
    assert isinstance(verdict, Failed) and verdict.reason is Reason.EXPIRED


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, Reason.MISSING),
        ({"x-upload-post-signature": "sha256=" + "0" * 64}, Reason.MALFORMED),
        ({"x-upload-post-timestamp": str(NOW)}, Reason.MALFORMED),
        (
            {"x-upload-post-timestamp": "abc", "x-upload-post-signature": "sha256=" + "0" * 64},
            Reason.MALFORMED,
        ),
        (
            {
                "x-upload-post-timestamp": "9" * 5000,
                "x-upload-post-signature": "sha256=" + "0" * 64,
            },
            Reason.MALFORMED,
        ),
        (
            {
                "x-upload-post-timestamp": f"{NOW}.5",
                "x-upload-post-signature": "sha256=" + "0" * 64,
            },
            Reason.MALFORMED,
        ),
        (
            {"x-upload-post-timestamp": str(NOW), "x-upload-post-signature": "sha256=zz"},
            Reason.MALFORMED,
        ),
        (
            {"x-upload-post-timestamp": str(NOW), "x-upload-post-signature": "0" * 64},
            Reason.MALFORMED,
        ),
        (
            {"x-upload-post-timestamp": str(NOW), "x-upload-post-signature": "sha1=" + "0" * 40},
            Reason.MALFORMED,
        ),
        ({"x-upload-post-timestamp": str(NOW), "x-upload-post-signature": ""}, Reason.MALFORMED),
    ],
    ids=[
        "none",
        "no-ts",
        "no-sig",
        "ts-text",
        "ts-huge",
        "ts-float",
        "sig-not-hex",
        "sig-no-prefix",
        "sig-sha1",
        "sig-empty",
    ],
)
def test_upload_post_missing_or_malformed_headers(headers: dict[str, str], reason: Reason) -> None:
    verdict = verifier("upload-post").begin(Headers(headers), now=NOW)
    assert isinstance(verdict, Failed) and verdict.reason is reason


def test_a_repeated_timestamp_header_is_malformed() -> None:
    raw = [
        (b"x-upload-post-timestamp", str(NOW).encode()),
        (b"x-upload-post-timestamp", str(NOW).encode()),
        (b"x-upload-post-signature", b"sha256=" + b"0" * 64),
    ]
    verdict = verifier("upload-post").begin(Headers(raw=raw), now=NOW)
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MALFORMED


def test_headers_decide_before_the_body_is_read() -> None:
    v = verifier("upload-post")
    assert isinstance(v.begin(Headers({}), now=NOW), Failed)
    assert isinstance(v.begin(upload_post_headers(SECRET.encode(), BODY), now=NOW), Pending)


# -- standard-webhooks -------------------------------------------------------------------------


def sw_headers(signature: str = SW_SIGNATURE, msg_id: str = SW_ID) -> Headers:
    return Headers(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(SW_TIMESTAMP),
            "webhook-signature": signature,
        }
    )


def test_standard_webhooks_published_test_vector_passes_and_vouches_for_its_id() -> None:
    v = verifier("standard-webhooks", secrets=(SW_SECRET,))
    assert check(v, sw_headers(), SW_BODY, now=SW_TIMESTAMP + 5) == Passed(
        "standard-webhooks", SW_ID, SW_TIMESTAMP
    )
    assert (
        signatures.standard_webhooks_headers(SW_SECRET, SW_ID, SW_BODY, SW_TIMESTAMP)[
            "webhook-signature"
        ]
        == SW_SIGNATURE
    )


def test_standard_webhooks_secret_without_prefix_is_accepted() -> None:
    v = verifier("standard-webhooks", secrets=(SW_SECRET.removeprefix("whsec_"),))
    assert isinstance(check(v, sw_headers(), SW_BODY, now=SW_TIMESTAMP), Passed)


def test_standard_webhooks_several_signatures_and_other_versions() -> None:
    v = verifier("standard-webhooks", secrets=(SW_SECRET,))
    header = f"v1a,AAAA v1,{base64.b64encode(b'x' * 32).decode()} {SW_SIGNATURE}"
    assert isinstance(check(v, sw_headers(header), SW_BODY, now=SW_TIMESTAMP), Passed)


def test_standard_webhooks_the_id_is_signed_so_changing_it_fails() -> None:
    v = verifier("standard-webhooks", secrets=(SW_SECRET,))
    verdict = check(v, sw_headers(msg_id="msg_other"), SW_BODY, now=SW_TIMESTAMP)
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MISMATCH


@pytest.mark.parametrize(
    "signature",
    [
        "v1,not base64!!",
        "v1,",
        "v1,AAAA",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v2,abc",
        "",
    ],
    ids=["bad-base64", "empty", "short", "no-version", "other-version", "blank"],
)
def test_standard_webhooks_malformed_signature(signature: str) -> None:
    v = verifier("standard-webhooks", secrets=(SW_SECRET,))
    verdict = v.begin(sw_headers(signature), now=SW_TIMESTAMP)
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MALFORMED


def test_standard_webhooks_id_must_be_visible_ascii() -> None:
    v = verifier("standard-webhooks", secrets=(SW_SECRET,))
    verdict = v.begin(sw_headers(msg_id="a b"), now=SW_TIMESTAMP)
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MALFORMED


# -- token and combinations --------------------------------------------------------------------


def test_token_in_header_or_path() -> None:
    v = verifier("token", secrets=("a-token-of-24-characters",))
    ok_header = Headers(
        {"x-uphooks-token": "a-token-of-24-characters", "x-upload-post-delivery": "d1"}
    )
    assert check(v, ok_header) == Passed("token", "d1")
    assert check(v, Headers({}), path_token="a-token-of-24-characters") == Passed("token", None)
    wrong = check(v, Headers({"x-uphooks-token": "a-token-of-24-characterz"}))
    assert isinstance(wrong, Failed) and wrong.reason is Reason.BAD_TOKEN
    missing = check(v, Headers({}))
    assert isinstance(missing, Failed) and missing.reason is Reason.MISSING
    too_long = check(v, Headers({"x-uphooks-token": "x" * 5000}))
    assert isinstance(too_long, Failed) and too_long.reason is Reason.MALFORMED


def test_when_every_mode_fails_the_most_hopeful_reason_is_reported() -> None:
    v = verifier("upload-post", "token", tokens=["a-token-of-24-characters"])
    # No token at all (MISSING) but a well-formed signature with an unknown secret (MISMATCH).
    verdict = check(v, upload_post_headers(OTHER.encode(), BODY))
    assert isinstance(verdict, Failed) and verdict.reason is Reason.MISMATCH
    assert isinstance(check(v, Headers({"x-uphooks-token": "a-token-of-24-characters"})), Passed)


def test_none_mode_passes_everything_and_keeps_the_delivery_header() -> None:
    v = Verifier.from_settings(Settings(verify=["none"]))
    assert v.open
    assert check(v, Headers({"x-upload-post-delivery": "d9"})) == Passed("none", "d9")


# -- configuration -----------------------------------------------------------------------------


def test_signing_is_the_default_and_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UPHOOKS_VERIFY", raising=False)
    monkeypatch.delenv("UPHOOKS_SECRETS", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.verify == ["upload-post"]
    with pytest.raises(ConfigurationError, match="UPHOOKS_SECRETS"):
        Verifier.from_settings(settings)


def test_short_secrets_and_unusable_standard_webhooks_secrets_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="shorter than 16"):
        verifier("upload-post", secrets=("changethis",))
    with pytest.raises(ConfigurationError, match="base64"):
        verifier("standard-webhooks", secrets=("not base64 at all, sorry!",))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"verify": "hmac"}, "UPHOOKS_VERIFY must name"),
        ({"verify": "none,token"}, "cannot be combined"),
        ({"verify_tolerance_seconds": 7 * 86_400}, "must not exceed UPHOOKS_DEDUP_TTL_SECONDS"),
        ({"dedup_ttl_seconds": 3600}, "must not exceed UPHOOKS_DEDUP_TTL_SECONDS"),
        ({"verify_mismatch_status": 400}, "503"),
        ({"allowed_networks": "10.0.0.0/8, nonsense"}, "CIDR"),
    ],
)
def test_settings_refuse_inconsistent_values(env: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**env)


def test_settings_parse_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPHOOKS_VERIFY", "Upload-Post, token")
    monkeypatch.setenv("UPHOOKS_SECRETS", f"{SECRET}, {OTHER}")
    monkeypatch.setenv("UPHOOKS_ALLOWED_NETWORKS", "10.0.0.0/8,2001:db8::/32")
    monkeypatch.setenv("UPHOOKS_VERIFY_MISMATCH_STATUS", "401")
    settings = Settings()
    assert settings.verify == ["upload-post", "token"]
    assert [s.get_secret_value() for s in settings.secrets] == [SECRET, OTHER]
    assert settings.allowed_networks == [ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")]
    assert settings.verify_mismatch_status == 401
    # Secrets stay out of every printed form of the settings.
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_a_settings_error_next_to_a_secret_does_not_print_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPHOOKS_SECRETS", SECRET)
    monkeypatch.setenv("UPHOOKS_VERIFY_TOLERANCE_SECONDS", str(30 * 86_400))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert SECRET not in str(caught.value)


# -- allowed networks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7:4711", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", None),
        ("_hidden", None),
        ("[2001:db8::1", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert parsed == (ip_address(expected) if expected else None)


PROXIES = [ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # Not from a trusted proxy: X-Forwarded-For is the caller's own words.
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
        # From our proxy: the rightmost address it appended is the client.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        # A forged entry on the left is ignored, right-to-left stops at the first untrusted hop.
        ("10.0.0.2", ["192.0.2.66, 198.51.100.1"], "198.51.100.1"),
        # Two proxies of ours in a row, and the header split over two lines.
        ("10.0.0.2", ["192.0.2.66", "198.51.100.1, 10.0.0.9"], "198.51.100.1"),
        # Garbage where the client should be: unknown.
        ("10.0.0.2", ["198.51.100.1, nonsense"], None),
        # Every hop is ours: the leftmost.
        ("10.0.0.2", ["10.1.1.1, 10.0.0.9"], "10.1.1.1"),
        # Our proxy without the header.
        ("10.0.0.2", [], "10.0.0.2"),
    ],
)
def test_client_address_right_to_left(peer: str, forwarded: list[str], client: str | None) -> None:
    found = AllowedNetworks([ip_network("0.0.0.0/0")], PROXIES).client(peer, forwarded)
    assert found == (ip_address(client) if client else None)


def test_allow_list_reads_the_asgi_scope() -> None:
    sources = AllowedNetworks([ip_network("198.51.100.0/24")], PROXIES)
    via_proxy = {"client": ("10.0.0.2", 1), "headers": [(b"x-forwarded-for", b"198.51.100.1")]}
    spoofed = {"client": ("203.0.113.7", 1), "headers": [(b"x-forwarded-for", b"198.51.100.1")]}
    assert sources.allows(via_proxy)
    assert not sources.allows(spoofed)
    assert not sources.allows({"client": None, "headers": []})
    assert AllowedNetworks([], []).allows(spoofed)


# -- limits ------------------------------------------------------------------------------------


def test_too_deep() -> None:
    shallow = b'{"a":[[[1]]]}'
    assert not too_deep(shallow, {"a": [[[1]]]})
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    assert too_deep(b"[" * 200 + b"1" + b"]" * 200, deep)
    wide = {"event": "x", "items": [[1]] * 500}
    assert not too_deep(b"[" * 1001, wide)


def test_log_throttle_counts_what_it_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("receiver.limits.time.monotonic", lambda: clock[0])
    throttle = LogThrottle(interval=10)
    assert throttle.allow("a") == 0
    assert throttle.allow("a") is None
    assert throttle.allow("a") is None
    assert throttle.allow("b") == 0
    clock[0] += 11
    assert throttle.allow("a") == 2
