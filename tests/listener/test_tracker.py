"""Series completeness rules, driven by a hand-advanced clock (no network, no sleeping)."""

from __future__ import annotations

from service.listener.tracker import Origin, SeriesTracker

ORIGIN = Origin("SCANNER", "10.0.0.5")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock) -> SeriesTracker:
    return SeriesTracker(
        quiet_time_s=30, release_grace_s=5, partial_timeout_s=600, finished_retention_s=3600, clock=clock
    )


def send(t: SeriesTracker, assoc: int, series: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        t.instance_received(assoc, series, f"1.2.{i}", ORIGIN)


def test_quiet_time_makes_a_series_ready_even_with_the_association_open():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 10)
    clock.now += 29.9
    assert t.poll() == ([], [])
    clock.now += 0.2
    (ready,), expired = t.poll()
    assert (ready.series_uid, ready.n_instances, ready.reason, ready.generation) == ("1.1", 10, "quiet", 1)
    assert ready.origin == ORIGIN and expired == []
    assert t.poll() == ([], [])  # dispatched once


def test_release_with_nothing_pending_makes_it_ready_after_the_grace():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 10)
    assert t.association_ended(1, released=True) == ["1.1"]
    clock.now += 4.9
    assert t.poll() == ([], [])
    clock.now += 0.2
    (ready,), _ = t.poll()
    assert ready.reason == "released"


def test_another_open_association_on_the_series_keeps_it_pending():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 5)
    send(t, 2, "1.1", 5, start=5)
    t.association_ended(2, released=True)
    clock.now += 10
    assert t.poll() == ([], [])
    t.association_ended(1, released=True)
    clock.now += 5
    (ready,), _ = t.poll()
    assert ready.n_instances == 10 and ready.reason == "released"


def test_a_new_association_within_the_grace_continues_the_series():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 5)
    t.association_ended(1, released=True)
    clock.now += 2
    send(t, 2, "1.1", 5, start=5)
    clock.now += 4  # 6 s after the first release, but the series is open again
    assert t.poll() == ([], [])
    t.association_ended(2, released=True)
    clock.now += 5
    (ready,), _ = t.poll()
    assert ready.n_instances == 10 and ready.generation == 1


def test_aborted_series_is_not_made_ready_by_time_and_expires():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 5)
    t.association_ended(1, released=False)
    clock.now += 599
    assert t.poll() == ([], [])
    clock.now += 2
    ready, (expired,) = t.poll()
    assert ready == [] and (expired.series_uid, expired.reason, expired.n_instances) == ("1.1", "partial_timeout", 5)
    assert not t.known("1.1")


def test_aborted_series_completed_by_a_new_association():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 5)
    t.association_ended(1, released=False)
    clock.now += 60
    send(t, 2, "1.1", 10)  # the sender retries the whole series
    t.association_ended(2, released=True)
    clock.now += 5
    (ready,), _ = t.poll()
    assert ready.n_instances == 10


def test_late_instance_reforms_the_series_as_a_new_generation_and_finished_series_expire():
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 10)
    t.association_ended(1, released=True)
    clock.now += 5
    (first,), _ = t.poll()
    clock.now += 100
    send(t, 2, "1.1", 1)  # a resent instance
    t.association_ended(2, released=True)
    clock.now += 5
    (second,), _ = t.poll()
    assert (second.generation, second.n_instances) == (2, 10)
    clock.now += 3600
    ready, (expired,) = t.poll()
    assert ready == [] and expired.reason == "retention"


def test_recovered_undispatched_series_waits_like_an_aborted_one():
    clock = Clock()
    t = make(clock)
    t.recover("1.1", ["1.2.1", "1.2.2"], Origin("", ""), dispatched=False)
    t.recover("1.3", ["1.2.3"], Origin("", ""), dispatched=True)
    clock.now += 100
    assert t.poll() == ([], [])
    assert t.counts() == {"series_pending": 1, "series_finished": 1}


def test_instance_handled_after_its_association_aborted_keeps_the_series_aborted():
    """A C-STORE still in flight when the connection drops is reported after the association ended: it must not
    re-open the dead association (which would let the quiet time turn the fragment into a job)."""
    clock = Clock()
    t = make(clock)
    send(t, 1, "1.1", 5)
    t.association_ended(1, released=False)
    send(t, 1, "1.1", 1, start=5)  # the in-flight instance, handled after the abort
    clock.now += 599
    assert t.poll() == ([], [])
    clock.now += 2
    ready, (expired,) = t.poll()
    assert ready == [] and (expired.reason, expired.n_instances) == ("partial_timeout", 6)


def test_first_instance_handled_after_its_association_aborted_is_a_fragment():
    clock = Clock()
    t = make(clock)
    t.association_ended(7, released=False)
    send(t, 7, "1.9", 1)
    clock.now += 60
    assert t.poll() == ([], [])
