"""The event-time allowance: 300 s by default, widened by APPRANK_EVENT_CLOCK_SKEW_S."""

from __future__ import annotations

import pytest

from service.events.models import EventIn, ServedRef
from service.events.validation import CLOCK_SKEW_S, check_reference
from service.settings import ServiceSettings

SERVED = ServedRef(user_id="u1", experiment="e", arm="a", ts=1_000_000.0, app_ids=frozenset({"a1"}))


def _event(ts: float) -> EventIn:
    return EventIn(index=0, event_id="x", type="impression", request_id="r", app_id="a1", user_id="u1", ts=ts)


def test_default_allowance_refuses_back_dated_and_future_times() -> None:
    assert CLOCK_SKEW_S == 300.0
    early = check_reference(_event(SERVED.ts - 301), SERVED, received_at=SERVED.ts + 10)
    assert early is not None and early.code == "ts_before_served" and early.field == "events[0].ts"
    late = check_reference(_event(SERVED.ts + 400), SERVED, received_at=SERVED.ts + 10)
    assert late is not None and late.code == "ts_in_future"
    assert check_reference(_event(SERVED.ts - 299), SERVED, received_at=SERVED.ts + 10) is None


def test_widened_allowance_accepts_events_of_past_days() -> None:
    week = 7 * 86_400.0
    assert check_reference(_event(SERVED.ts - 3 * 86_400), SERVED, SERVED.ts + 10, skew=week) is None
    refused = check_reference(_event(SERVED.ts - 8 * 86_400), SERVED, SERVED.ts + 10, skew=week)
    assert refused is not None and "by more than 604800 s" in refused.reason


def test_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPRANK_EVENT_CLOCK_SKEW_S", "691200")
    assert ServiceSettings().event_clock_skew_s == 691_200.0
