"""uphooks/signatures.py against known vectors, computed outside this code.

The Standard Webhooks vector is the specification's published one (the reference libraries test
against it); the upload-post vectors were computed with ``openssl dgst -sha256 -hmac``.
"""

from __future__ import annotations

import base64
import functools

import pytest

from uphooks import signatures

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

UP_TIMESTAMP = 1_700_000_000
UP_BODY = b'{"event":"upload_completed","job_id":"j1"}'
# printf '%s' '1700000000.<body>' | openssl dgst -sha256 -hmac 'whsec_MfKQ...'
UP_WITH_STRING = "sha256=1d7374e8a2ddc009646c405cda70f4ed3e320f60ed63c85f73d8c0d96725f6c2"
# ... -mac HMAC -macopt hexkey:<the base64-decoded part of the secret>
UP_WITH_DECODED = "sha256=e7f722e7c6717360ed4e3df5e4e4f9ac43a44d15573836ea3408dc44713d899b"


def test_standard_webhooks_signing_reproduces_the_published_vector() -> None:
    headers = signatures.standard_webhooks_headers(SW_SECRET, SW_ID, SW_BODY, SW_TIMESTAMP)
    assert headers == {
        "webhook-id": SW_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": SW_SIGNATURE,
    }


def test_standard_webhooks_secret_prefix_is_optional_and_must_be_base64() -> None:
    key = signatures.standard_webhooks_key(SW_SECRET)
    assert signatures.decode_whsec(SW_SECRET.removeprefix("whsec_")) == key
    assert signatures.standard_webhooks_signature(key, SW_ID, SW_TIMESTAMP, SW_BODY) == (
        SW_SIGNATURE
    )
    with pytest.raises(ValueError, match="whsec_<base64>"):
        signatures.standard_webhooks_key("whsec_not base64!")
    assert signatures.decode_whsec("whsec_") is None


def test_standard_webhooks_verifies_the_vector_among_other_versions_and_refuses_changes() -> None:
    headers = {
        "Webhook-Id": SW_ID,
        "Webhook-Timestamp": str(SW_TIMESTAMP),
        "Webhook-Signature": f"v1a,AAAA v1,{base64.b64encode(b'x' * 32).decode()} {SW_SIGNATURE}",
    }
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    assert signatures.verify(
        "standard-webhooks", [other, SW_SECRET], headers, SW_BODY, now=SW_TIMESTAMP + 5
    )
    assert not signatures.verify("standard-webhooks", [other], headers, SW_BODY, now=SW_TIMESTAMP)
    assert not signatures.verify(
        "standard-webhooks", [SW_SECRET], headers, SW_BODY + b" ", now=SW_TIMESTAMP
    )
    moved = headers | {"Webhook-Id": "msg_other"}
    assert not signatures.verify("standard-webhooks", [SW_SECRET], moved, SW_BODY, now=SW_TIMESTAMP)


def test_a_timestamp_outside_the_tolerance_fails_either_way() -> None:
    headers = signatures.standard_webhooks_headers(SW_SECRET, SW_ID, SW_BODY, SW_TIMESTAMP)
    check = functools.partial(signatures.verify, "standard-webhooks")
    assert check([SW_SECRET], headers, SW_BODY, now=SW_TIMESTAMP + 300)
    assert not check([SW_SECRET], headers, SW_BODY, now=SW_TIMESTAMP + 301)
    assert not check([SW_SECRET], headers, SW_BODY, now=SW_TIMESTAMP - 301)
    assert check([SW_SECRET], headers, SW_BODY, now=SW_TIMESTAMP + 900, tolerance=1000)


@pytest.mark.parametrize(
    ("raw", "now", "expected"),
    [
        ("100", 100.0, (signatures.Timing.FRESH, 0)),
        ("100", 400.0, (signatures.Timing.FRESH, 300)),
        ("100", 400.5, (signatures.Timing.EXPIRED, 300)),
        ("200", 100.0, (signatures.Timing.EARLY, -100)),
        ("12e3", 100.0, (signatures.Timing.MALFORMED, 0)),
        ("-5", 100.0, (signatures.Timing.MALFORMED, 0)),
    ],
)
def test_timestamp_age_judges_against_tolerance_and_skew(
    raw: str, now: float, expected: tuple[signatures.Timing, int]
) -> None:
    assert signatures.timestamp_age(raw, now, tolerance=300, skew=60) == expected


def test_upload_post_signs_with_the_whole_secret_string() -> None:
    assert signatures.upload_post_signature(SW_SECRET, UP_TIMESTAMP, UP_BODY) == UP_WITH_STRING
    assert signatures.upload_post_headers(SW_SECRET, UP_BODY, UP_TIMESTAMP) == {
        "X-Upload-Post-Timestamp": str(UP_TIMESTAMP),
        "X-Upload-Post-Signature": UP_WITH_STRING,
    }


def test_upload_post_verifies_both_key_readings_since_the_scheme_is_unconfirmed() -> None:
    keys = signatures.upload_post_keys(SW_SECRET)
    assert keys == [SW_SECRET.encode(), signatures.decode_whsec(SW_SECRET)]
    assert signatures.upload_post_signature(keys[1], UP_TIMESTAMP, UP_BODY) == UP_WITH_DECODED
    for signature in (UP_WITH_STRING, UP_WITH_DECODED):
        headers = {
            "x-upload-post-timestamp": str(UP_TIMESTAMP),
            "x-upload-post-signature": signature,
        }
        assert signatures.verify("upload-post", [SW_SECRET], headers, UP_BODY, now=UP_TIMESTAMP)
    assert signatures.upload_post_keys("plain-token-secret-1234") == [b"plain-token-secret-1234"]


def test_upload_post_refuses_a_changed_body_or_timestamp() -> None:
    headers = signatures.upload_post_headers(SW_SECRET, UP_BODY, UP_TIMESTAMP)
    check = functools.partial(signatures.verify, "upload-post")
    assert not check([SW_SECRET], headers, UP_BODY[:-1] + b" ", now=UP_TIMESTAMP)
    moved = headers | {"X-Upload-Post-Timestamp": str(UP_TIMESTAMP + 1)}
    assert not check([SW_SECRET], moved, UP_BODY, now=UP_TIMESTAMP)
    assert not check([SW_SECRET], {}, UP_BODY, now=UP_TIMESTAMP)


def test_header_parsers_keep_only_well_formed_signatures_and_bound_their_number() -> None:
    good = UP_WITH_STRING
    parsed = signatures.upload_post_signatures([f"md5=00, {good}", "sha256=zz"])
    assert parsed == [bytes.fromhex(good.removeprefix("sha256="))]
    assert len(signatures.upload_post_signatures([" ".join([good] * 50)])) == 8
    parsed_sw = signatures.standard_webhooks_signatures(f"v1,%%% v1,AAAA {SW_SIGNATURE}")
    assert parsed_sw == [base64.b64decode(SW_SIGNATURE.removeprefix("v1,"))]


def test_matches_tries_every_key_and_every_signature() -> None:
    body = SW_BODY
    prefix = f"{SW_ID}.{SW_TIMESTAMP}.".encode()
    key = signatures.standard_webhooks_key(SW_SECRET)
    wanted = base64.b64decode(SW_SIGNATURE.removeprefix("v1,"))
    keyed = signatures.macs([b"other key, 16 bytes", key])
    assert signatures.matches(keyed, prefix, body, [b"\0" * 32, wanted])
    assert not signatures.matches(keyed[:1], prefix, body, [wanted])
    # The prepared keys are copied, never consumed: a second check gives the same answer.
    assert signatures.matches(keyed, prefix, body, [wanted])
