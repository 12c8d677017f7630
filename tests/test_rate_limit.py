"""Sends are paced to the configured rate, on an injected clock."""

from __future__ import annotations

from aftercare.channels.rate_limit import RateLimiter


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
