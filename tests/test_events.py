"""The event models accept the provider's own examples and keep what they do not declare."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.conftest import ROOT, fixture_bodies
from uphooks.events import (
    ACCOUNT_EVENTS,
    CATALOGUE,
    DOCUMENTED_EVENTS,
    AccountEvent,
    EventValidationError,
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountReauthRequired,
    UnknownEvent,
    UploadCompleted,
    parse_event,
)

SHARED = ROOT.parent / "shared" / "fixtures"

EXPECTED = {
    "upload_completed.json": UploadCompleted,
    "upload_completed_failed.json": UploadCompleted,
    "upload_completed_without_job_id.json": UploadCompleted,
    "social_account_connected.json": SocialAccountConnected,
    "social_account_disconnected.json": SocialAccountDisconnected,
    "social_account_reauth_required.json": SocialAccountReauthRequired,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_parses_to_its_model(name: str) -> None:
    event = parse_event(json.loads(fixture_bodies()[name]))
    assert type(event) is EXPECTED[name]
    assert event.created_at == datetime(2024, 3, 15, 14, 30)


def test_the_copies_in_tests_match_the_shared_fixtures() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not beside this checkout")
    shared = {p.name: p.read_bytes() for p in SHARED.glob("*.json")}
    assert shared == fixture_bodies()


def test_upload_fields_and_optional_ones() -> None:
    bodies = fixture_bodies()
    ok = parse_event(json.loads(bodies["upload_completed.json"]))
    assert isinstance(ok, UploadCompleted)
    assert (ok.platform, ok.result.success, ok.result.post_id) == (
        "instagram",
        True,
        "17987654321098765",
    )
    assert ok.user_email == "[email protected]"  # the provider's mangled example stays
    failed = parse_event(json.loads(bodies["upload_completed_failed.json"]))
    assert isinstance(failed, UploadCompleted)
    assert failed.result.success is False and failed.result.url is None
    assert "duration" in (failed.result.error or "")
    no_job = parse_event(json.loads(bodies["upload_completed_without_job_id.json"]))
    assert isinstance(no_job, UploadCompleted) and no_job.job_id is None


def test_account_events_reason_is_optional() -> None:
    connected = parse_event(json.loads(fixture_bodies()["social_account_connected.json"]))
    assert isinstance(connected, SocialAccountConnected)
    assert connected.reason is None and connected.status == "connected"
    reauth = parse_event(json.loads(fixture_bodies()["social_account_reauth_required.json"]))
    assert isinstance(reauth, SocialAccountReauthRequired)
    assert reauth.reason == "token_refresh_threshold_exceeded"
    assert reauth.profile_username is None


def test_extra_fields_are_kept() -> None:
    payload = json.loads(fixture_bodies()["upload_completed.json"])
    payload["thumbnail_url"] = "https://cdn.example/t.jpg"
    payload["result"]["views"] = 3
    event = parse_event(payload)
    assert event.model_extra == {"thumbnail_url": "https://cdn.example/t.jpg"}
    assert isinstance(event, UploadCompleted)
    assert event.result.model_extra == {"views": 3}


def test_unknown_event_is_kept_whole() -> None:
    payload = {"event": "dm_received", "message": {"id": "m1"}, "platform": "instagram"}
    event = parse_event(payload)
    assert isinstance(event, UnknownEvent)
    assert event.event == "dm_received"
    assert event.model_dump() == payload | {"created_at": None}


def test_known_event_missing_a_required_field_says_which() -> None:
    payload = json.loads(fixture_bodies()["social_account_connected.json"])
    del payload["account_name"]
    with pytest.raises(EventValidationError, match="account_name"):
        parse_event(payload)


def test_the_catalogue_is_derived_from_the_models() -> None:
    assert DOCUMENTED_EVENTS == (
        "upload_completed",
        "social_account_connected",
        "social_account_disconnected",
        "social_account_reauth_required",
    )
    assert DOCUMENTED_EVENTS[1:] == ACCOUNT_EVENTS
    upload = CATALOGUE["upload_completed"]
    assert upload.model is UploadCompleted and not upload.is_account_event
    assert {"job_id", "result.success", "result.post_id"} <= upload.fields
    connected = CATALOGUE["social_account_connected"]
    assert connected.is_account_event and issubclass(connected.model, AccountEvent)
    assert {"account_name", "status"} <= connected.fields and "result" not in connected.fields


def test_what_the_catalogue_feeds_filters_orderings_and_keys() -> None:
    from handlers.filters import FILTERS_BY_EVENT
    from handlers.options import ORDERINGS

    account = frozenset({"platform", "profile", "account", "status"})
    assert {
        "upload_completed": frozenset({"platform", "profile", "success"}),
        "social_account_connected": account,
        "social_account_disconnected": account,
        "social_account_reauth_required": account,
    } == FILTERS_BY_EVENT
    assert ORDERINGS["account"].fits == frozenset(ACCOUNT_EVENTS)
    assert ORDERINGS["upload"].fits == frozenset({"upload_completed"})
