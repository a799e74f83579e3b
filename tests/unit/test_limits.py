"""The pure usage-limit rules: account keys, the per-account gate, limit detection, texts."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from coordinator.limits import (
    LimitGate,
    RateLimited,
    account_key,
    limit_of,
    limit_text,
    parse_reset_text,
    resume_at,
    usage_text,
    warning_text,
)
from runner.events import RateLimit, Result, Usage, WindowUsage

NOW = datetime(2026, 12, 1, 10, 25, 30, tzinfo=UTC).timestamp()


def _result(
    text: str | None,
    *,
    status: int | None = 429,
    is_error: bool = True,
    api_error: str | None = "usage_limit_reached",
) -> Result:
    return Result(
        subtype="success",
        is_error=is_error,
        num_turns=1,
        duration_ms=700,
        session_id="s",
        total_cost_usd=0.0,
        usage=Usage(),
        model_usage={},
        permission_denials=(),
        api_error_status=status,
        text=text,
        api_error=api_error,
        terminal_reason="api_error",
    )


def _event(
    status: str, resets_at: float | None = NOW + 600, kind: str | None = "five_hour"
) -> RateLimit:
    return RateLimit(status, resets_at, kind, None, False)


# ------------------------------------------------------------------ account_key


def test_account_key_is_stable_short_and_never_the_secret() -> None:
    env = {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-SECRET", "HOME": "/home/a"}
    key = account_key(env)
    assert key == account_key(dict(env)) and key.startswith("oauth:") and len(key) == 18
    assert "SECRET" not in key
    assert account_key({"CLAUDE_CODE_OAUTH_TOKEN": "other"}) != key


def test_account_key_follows_the_credential_the_cli_uses() -> None:
    both = {"ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_OAUTH_TOKEN": "t"}
    assert account_key(both) == account_key({"ANTHROPIC_API_KEY": "k"})
    assert account_key(both).startswith("api_key:")
    assert account_key({"ANTHROPIC_AUTH_TOKEN": "t"}).startswith("auth_token:")
    # The same token against another endpoint is another account; a trailing slash is not.
    oauth = {"CLAUDE_CODE_OAUTH_TOKEN": "t", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    assert account_key(oauth) != account_key({"CLAUDE_CODE_OAUTH_TOKEN": "t"})
    assert account_key(oauth) == account_key(oauth | {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9/"})
    assert account_key({"CLAUDE_CODE_OAUTH_TOKEN": "  "}).startswith("login:")


def test_account_key_of_a_login_is_its_config_dir() -> None:
    home = account_key({"HOME": "/home/a"})
    assert home == account_key({"CLAUDE_CONFIG_DIR": "/home/a/.claude/"})
    assert home != account_key({"HOME": "/home/b"}) and home.startswith("login:")


# ------------------------------------------------------------------ gate


def test_resume_at_adds_jitter_never_before_the_reset() -> None:
    rng = random.Random(7)
    times = [resume_at(NOW + 100, NOW, rng, jitter_s=5) for _ in range(200)]
    assert all(NOW + 100 <= t <= NOW + 105 for t in times)
    assert len(set(times)) > 1  # a real jitter, not a constant
    assert resume_at(NOW + 100, NOW, rng, jitter_s=0) == NOW + 100


@pytest.mark.parametrize("resets_at", [None, NOW - 1, NOW])
def test_missing_or_past_reset_gets_the_fallback(resets_at: float | None) -> None:
    assert resume_at(resets_at, NOW, jitter_s=0, fallback_s=60) == NOW + 60
    assert NOW + 30 <= resume_at(resets_at, NOW, jitter_s=2, fallback_s=30) <= NOW + 32


def test_gate_closes_an_account_until_its_reset_and_keeps_the_latest() -> None:
    gate = LimitGate(jitter_s=0, fallback_s=60)
    assert gate.is_open("a", NOW) and gate.open_at("a") is None
    assert gate.reject("a", NOW + 300, "five_hour", NOW) == NOW + 300
    assert not gate.is_open("a", NOW + 299) and gate.is_open("a", NOW + 300)
    assert gate.is_open("b", NOW)  # other accounts are not touched
    # An earlier reset does not shorten the closure; a later one extends it.
    assert gate.reject("a", NOW + 100, "five_hour", NOW) == NOW + 300
    assert gate.reject("a", NOW + 900, "seven_day", NOW) == NOW + 900
    closure = gate.closure("a")
    assert closure is not None and closure.limit_type == "seven_day"
    assert set(gate.closed(NOW)) == {"a"} and gate.closed(NOW + 900) == {}
    gate.release("a")
    assert gate.is_open("a", NOW) and gate.open_at("a") is None


def test_gate_fallback_for_a_rejection_without_reset() -> None:
    gate = LimitGate(jitter_s=0, fallback_s=45)
    assert gate.reject("a", None, None, NOW) == NOW + 45
    with pytest.raises(ValueError, match="jitter_s"):
        LimitGate(jitter_s=-1)


# ------------------------------------------------------------------ limit_of


def test_rejected_event_is_a_limit_with_its_reset() -> None:
    text = "You've hit your 5-hour limit · resets 10:36am (UTC)"
    limited = limit_of(_result(text), _event("rejected", NOW + 600), now=NOW)
    assert limited == RateLimited(NOW + 600, "five_hour", "event", text)


def test_result_alone_is_a_limit_and_its_text_gives_the_reset() -> None:
    text = "You've hit your weekly limit · resets Dec 4, 11:26am (Europe/Berlin)"
    limited = limit_of(_result(text, api_error=None), None, now=NOW)
    expected = datetime(2026, 12, 4, 11, 26, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert limited == RateLimited(expected, "seven_day", "result", text)
    # The api_error alone is enough, even with a text the CLI may reword one day.
    assert limit_of(_result("Limit reached"), None, now=NOW) == RateLimited(
        None, None, "result", "Limit reached"
    )


def test_rejected_event_without_reset_takes_the_text() -> None:
    text = "You've hit your Opus limit · resets 12:26pm (UTC)"
    limited = limit_of(_result(text), _event("rejected", None, None), now=NOW)
    expected = datetime(2026, 12, 1, 12, 26, tzinfo=UTC).timestamp()
    assert limited == RateLimited(expected, "seven_day_opus", "event", text)


@pytest.mark.parametrize(
    ("result", "event"),
    [
        # An API key's 429: retried by the CLI, then an ordinary error.
        (
            _result(
                "API Error: Request rejected (429) · This request would exceed your rate limit.",
                api_error=None,
            ),
            None,
        ),
        (_result("Overloaded", status=529, api_error=None), None),
        (_result("fine", status=None, is_error=False, api_error=None), _event("rejected")),
        (_result("boom", status=500, api_error=None), _event("allowed")),
        (_result("boom", status=500, api_error=None), _event("allowed_warning")),
        (None, None),
        (None, _event("allowed")),
    ],
)
def test_ordinary_endings_are_not_limits(result: Result | None, event: RateLimit | None) -> None:
    assert limit_of(result, event, now=NOW) is None


def test_killed_process_after_a_rejected_event_is_a_limit() -> None:
    assert limit_of(None, _event("rejected"), now=NOW) == RateLimited(
        NOW + 600, "five_hour", "event", None
    )


def test_rejected_but_paid_by_overage_is_not_a_limit() -> None:
    paid = RateLimit("rejected", NOW + 600, "five_hour", None, True)
    assert paid.rejected and not paid.limited
    assert limit_of(None, paid, now=NOW) is None
    assert limit_of(_result("boom", status=500, api_error=None), paid, now=NOW) is None


# ------------------------------------------------------------------ parse_reset_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resets 10:36am (UTC)", datetime(2026, 12, 1, 10, 36, tzinfo=UTC)),
        ("resets 10:25am (UTC)", datetime(2026, 12, 1, 10, 25, tzinfo=UTC)),  # seconds cut
        ("resets 10:20am (UTC)", datetime(2026, 12, 2, 10, 20, tzinfo=UTC)),  # tomorrow
        ("resets 12:05am (UTC)", datetime(2026, 12, 2, 0, 5, tzinfo=UTC)),
        ("resets 12:05pm (UTC)", datetime(2026, 12, 1, 12, 5, tzinfo=UTC)),
        ("resets 3pm (UTC)", datetime(2026, 12, 1, 15, 0, tzinfo=UTC)),
        (
            "resets 5:36am (America/New_York)",
            datetime(2026, 12, 1, 5, 36, tzinfo=ZoneInfo("America/New_York")),
        ),
        ("resets Jan 2, 9:00am (UTC)", datetime(2027, 1, 2, 9, 0, tzinfo=UTC)),  # next year
        ("resets 11:00am", datetime(2026, 12, 1, 11, 0, tzinfo=UTC)),  # no zone: the default
    ],
)
def test_parse_reset_text(text: str, expected: datetime) -> None:
    assert parse_reset_text(f"You've hit your 5-hour limit · {text}", now=NOW) == (
        expected.timestamp()
    )


@pytest.mark.parametrize(
    "text",
    [
        "You've hit your 5-hour limit",
        "resets 13:00pm (UTC)",
        "resets 10:36am (Mars/Olympus)",
        "resets Feb 30, 9:00am (UTC)",
        "resets Foo 3, 9:00am (UTC)",
    ],
)
def test_unparsable_resets_are_none(text: str) -> None:
    assert parse_reset_text(text, now=NOW) is None


# ------------------------------------------------------------------ texts


def test_limit_text_in_local_time() -> None:
    zone = ZoneInfo("Europe/Berlin")
    reset = datetime(2026, 12, 1, 2, 10, tzinfo=UTC).timestamp()
    assert limit_text(reset, "five_hour", zone=zone) == "rate-limited until 03:10 (five_hour)"
    assert limit_text(None, "five_hour") == "rate-limited (five_hour)"
    assert limit_text(reset, None, zone=zone) == "rate-limited until 03:10"
    far = datetime(2026, 12, 4, 2, 10, tzinfo=UTC).timestamp()
    assert (
        limit_text(far, "seven_day", now=NOW, zone=zone)
        == "rate-limited until Dec 04 03:10 (seven_day)"
    )


def test_warning_and_usage_texts() -> None:
    zone = ZoneInfo("UTC")
    reset = datetime(2026, 12, 1, 3, 10, tzinfo=UTC).timestamp()
    event = RateLimit(
        "allowed_warning",
        reset,
        "five_hour",
        0.82,
        False,
        0.82,
        {
            "five_hour": WindowUsage(0.82, reset, "allowed_warning"),
            "seven_day": WindowUsage(0.4, None, "allowed"),
        },
    )
    assert warning_text(event, zone=zone) == "usage warning: five_hour limit 82% used, resets 03:10"
    assert usage_text(event) == "5h 82% · 7d 40%"
    bare = RateLimit("allowed_warning", None, None, None, False)
    assert warning_text(bare) == "usage warning: usage limit"
    assert usage_text(bare) is None
    assert usage_text(RateLimit("allowed", None, "seven_day", 0.5, False)) == "7d 50%"
