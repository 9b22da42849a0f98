"""Settings refuse combinations that would lose or duplicate events, and say what to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from uphooks.settings import Settings


def test_redis_url_is_read_from_the_conventional_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPHOOKS_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:6380/2")
    assert Settings().redis_url == "redis://example.invalid:6380/2"


def test_handler_modules_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPHOOKS_HANDLER_MODULES", " a.b , c ,")
    assert Settings().handler_modules == ["a.b", "c"]


def test_a_time_limit_longer_than_the_visibility_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(visibility_timeout_seconds=250, task_time_limit_seconds=300)


def test_soft_limit_must_come_before_the_hard_one() -> None:
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT"):
        Settings(task_soft_time_limit_seconds=300, task_time_limit_seconds=300)


def test_ack_timeout_stays_under_the_senders_timeout() -> None:
    with pytest.raises(ValidationError, match="ACK_TIMEOUT"):
        Settings(ack_timeout_seconds=12)


def test_the_webhook_path_must_be_absolute() -> None:
    with pytest.raises(ValidationError, match="must start with"):
        Settings(webhook_path="hooks")
