"""The sliding-window estimate of ``LocalWindow``, with explicit clock values."""

from __future__ import annotations

from portway.policies.window import LocalWindow, Verdict


def test_admits_the_limit_within_one_window_then_refuses_without_counting() -> None:
    window = LocalWindow(limit=3, per=10.0, max_keys=100)
    verdicts = [window.hit("a", 100.0 + i) for i in range(3)]
    assert [(v.allowed, v.remaining) for v in verdicts] == [(True, 2), (True, 1), (True, 0)]
    assert all(v.reset == 10 - i for i, v in enumerate(verdicts))  # to the window's end (110)
    refused = window.hit("a", 103.0)
    assert not refused.allowed and refused.remaining == 0
    assert window.counts["a"] == [10, 0, 3]  # the refused request was not counted
    # Another key has its own quota.
    assert window.hit("b", 103.0).allowed


def test_previous_window_weighs_by_its_overlap() -> None:
    window = LocalWindow(limit=10, per=10.0, max_keys=100)
    for _ in range(10):
        assert window.hit("k", 105.0).allowed
    # At 112.5 the previous window (100-110) overlaps 75% of the sliding window: 7.5 count.
    verdict = window.hit("k", 112.5)
    assert verdict == Verdict(True, 1, 8, 0)  # 10 - 7.5 - 1 = 1.5 -> 1 remaining
    second = window.hit("k", 112.5)
    assert second.allowed and second.remaining == 0  # 7.5 + 1 + 1 = 9.5
    refused = window.hit("k", 112.5)
    assert not refused.allowed
    # 10 * (1 - t/10) + 2 + 1 <= 10  ->  t >= 3: 0.5 s after 112.5, rounded up to 1 s.
    assert refused.retry_after == 1


def test_retry_after_reaches_into_the_next_window_when_this_one_is_full() -> None:
    window = LocalWindow(limit=4, per=60.0, max_keys=100)
    for _ in range(4):
        window.hit("k", 600.0)  # window 10 starts at 600
    refused = window.hit("k", 630.0)
    # Next window (660): 4 * (1 - t/60) + 1 <= 4 -> t >= 15 s, so 30 + 15 s from now.
    assert refused.retry_after == 45
    assert not window.hit("k", 674.0).allowed
    assert window.hit("k", 675.0).allowed


def test_an_idle_key_starts_fresh_after_two_windows() -> None:
    window = LocalWindow(limit=2, per=1.0, max_keys=100)
    window.hit("k", 0.1)
    window.hit("k", 0.2)
    assert not window.hit("k", 0.3).allowed
    assert window.hit("k", 2.05).remaining == 1  # two windows later: nothing weighs any more


def test_keys_past_max_keys_forget_the_stale_then_the_oldest() -> None:
    window = LocalWindow(limit=5, per=1.0, max_keys=3)
    window.hit("old", 0.5)
    window.hit("a", 5.0)
    window.hit("b", 5.1)
    window.hit("c", 5.2)  # "old" is two windows stale: it goes first
    assert set(window.counts) == {"a", "b", "c"}
    window.hit("d", 5.3)  # nothing stale: the first added goes
    assert set(window.counts) == {"b", "c", "d"}


def test_state_lists_the_busiest_keys_of_the_live_windows() -> None:
    window = LocalWindow(limit=10, per=10.0, max_keys=100)
    for _ in range(4):
        window.hit("busy", 101.0)
    window.hit("calm", 101.0)
    window.hit("gone", 50.0)
    state = window.state(105.0)
    assert state["keys"] == 2 and state["limit"] == 10 and state["store"] == "local"
    assert state["top"] == [
        {"key": "busy", "used": 4.0, "remaining": 6},
        {"key": "calm", "used": 1.0, "remaining": 9},
    ]
    later = window.state(115.0)  # half of window 10 still overlaps
    assert later["top"][0] == {"key": "busy", "used": 2.0, "remaining": 8}
