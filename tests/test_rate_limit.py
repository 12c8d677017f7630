"""Sends are paced to the configured rate, on an injected clock: in this process, or
shared through the database by every sender on it; an SMS costs its segments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes.twilio import FakeTwilio
from sqlmodel import Session as DbSession

from aftercare.channels import Outgoing
from aftercare.channels.rate_limit import RateLimiter, SharedPace, slot_seconds
from aftercare.channels.twilio_sms import TwilioSms
from aftercare.config import SmsConfig
from aftercare.db import make_engine
from conftest import Clinic


def _sms(text: str) -> Outgoing:
    return Outgoing(message_id=1, channel="sms", to="+12125550123", patient_name="Jane Doe",
                    timezone="America/New_York", step="first_48h", text=text)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_calls_are_spaced_by_the_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(2.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(4):
        limiter.wait()
    assert fake.slept == [0.5, 0.5, 0.5]  # the first goes at once


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    fake = FakeTime()
    limiter = RateLimiter(1.0, clock=fake.clock, sleep=fake.sleep)
    limiter.wait()
    fake.now += 60  # a quiet minute
    limiter.wait()
    limiter.wait()
    assert fake.slept == [1.0]


def test_a_send_holds_the_pace_for_its_cost() -> None:
    fake = FakeTime()
    limiter = RateLimiter(2.0, clock=fake.clock, sleep=fake.sleep)
    limiter.wait(2)  # a 2-segment SMS: the next may start a second later, not half
    limiter.wait(1)
    limiter.wait(1)
    assert fake.slept == [1.0, 0.5]


def test_twilio_counts_an_sms_in_segments(fake_twilio: FakeTwilio) -> None:
    fake = FakeTime()
    config = SmsConfig(provider="twilio", api_base_url=fake_twilio.url,
                       **{"from": "+12125550100"})
    sms = TwilioSms(config, fake_twilio.account_sid, fake_twilio.auth_token,
                    RateLimiter(1.0, clock=fake.clock, sleep=fake.sleep))
    long = "x" * 200  # GSM-7, over 160 characters: 2 segments
    assert (sms.cost(_sms(long)), sms.cost(_sms("short")), sms.cost(_sms("é" * 80))) == (2, 1, 1)
    assert sms.cost(_sms("\u2019" * 71)) == 2  # a curly quote forces UCS-2: 70 a segment
    for text in (long, "short", "short"):
        sms.send(_sms(text))
    assert fake.slept == [2.0, 1.0] and len(fake_twilio.created) == 3


# -- the pace shared through the database (two engines: two daemons)


def _shared(clinic: Clinic, rate: float, wall: list[datetime]) -> SharedPace:
    return SharedPace(make_engine(clinic.url), "sms", rate, clock=lambda: wall[0])


@pytest.mark.backends
def test_daemons_on_one_database_take_their_slots_from_one_pace(clinic: Clinic) -> None:
    wall = [datetime(2026, 3, 2, 16, 0, tzinfo=UTC)]
    first, second = _shared(clinic, 2.0, wall), _shared(clinic, 2.0, wall)
    # Slots in turn, whoever asks: 0, 0.5 s, then 1 s for a 2-segment SMS, then 1.5 s later.
    assert [first.reserve(1), second.reserve(1), first.reserve(2), second.reserve(1)] == [
        0, 0.5, 1.0, 2.0]
    wall[0] += timedelta(minutes=1)  # a quiet minute: nothing saved up for a burst
    assert [second.reserve(1), first.reserve(1), first.reserve(1)] == [0, 0.5, 1.0]
    assert clinic.rows("SELECT name, next_at FROM sendpace") == [
        ("sms", "2026-03-02 16:01:01.500000")]


@pytest.mark.backends
def test_a_slot_taken_in_a_transaction_that_rolls_back_is_given_back(clinic: Clinic) -> None:
    wall = [datetime(2026, 3, 2, 16, 0, tzinfo=UTC)]
    pace = _shared(clinic, 1.0, wall)
    pace.reserve(1)
    with DbSession(pace.engine) as db:  # a send judged unwanted after all: no commit
        assert pace.reserve(1, db) == 1.0
        db.rollback()
    assert pace.reserve(1) == 1.0


def test_a_slot_is_never_shorter_than_the_rate() -> None:
    # Times are kept to the microsecond: a slot rounds up, never down, so the rate holds.
    assert slot_seconds(1, 3.0) == 0.333334 and slot_seconds(2, 60.0) == 0.033334
    assert slot_seconds(1, 10.0) == 0.1
