"""sip/ratelimit.py on a fake clock: token buckets, new-dialog admission, throttled logging."""

from __future__ import annotations

from callbridge.sip.ratelimit import (
    LogThrottle,
    NewDialogLimiter,
    TokenBuckets,
    Verdict,
    new_dialog_method,
)


def request(method: str, to: str = "<sip:a@b>") -> bytes:
    return (f"{method} sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: {to}\r\n"
            f"From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 {method}\r\n\r\n").encode()


def test_only_requests_that_create_state_are_counted():
    assert new_dialog_method(request("INVITE")) == b"INVITE"
    assert new_dialog_method(request("OPTIONS")) == b"OPTIONS"
    assert new_dialog_method(request("REGISTER")) == b"REGISTER"
    assert new_dialog_method(b"\r\n" + request("invite")) == b"INVITE"  # leading CRLF keep-alive
    assert new_dialog_method(request("INVITE", to="<sip:a@b>;tag=9")) is None  # re-INVITE
    assert new_dialog_method(request("BYE", to="<sip:a@b> ; tag=9")) is None
    assert new_dialog_method(request("INVITE").replace(b"To: <sip:a@b>", b"t: <sip:a@b>;tag=3")) is None
    assert new_dialog_method(request("ACK")) is None
    assert new_dialog_method(request("CANCEL")) is None
    assert new_dialog_method(b"SIP/2.0 200 OK\r\nTo: <sip:a@b>\r\n\r\n") is None
    assert new_dialog_method(b"\x00\x01garbage") is None


def test_bucket_allows_the_burst_then_the_rate():
    buckets = TokenBuckets(rate=10.0, burst=5.0)
    assert [buckets.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not buckets.allow("a", 0.05)  # half a token
    assert buckets.allow("a", 0.1)  # one token after 100 ms
    assert buckets.allow("b", 0.1)  # other sources have their own bucket
    # Refill is capped at the burst.
    assert sum(buckets.allow("a", 100.0) for _ in range(10)) == 5


def test_bucket_memory_is_bounded_and_idle_sources_expire():
    buckets = TokenBuckets(rate=1.0, burst=1.0, max_keys=100, idle_expiry=60.0)
    for i in range(10_000):
        buckets.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(buckets) == 100
    buckets.allow("late", 61.0)
    assert len(buckets) == 1  # everything idle for 60 s is gone
    # A source that went quiet comes back to a full bucket, not an evicted-and-forgotten empty one.
    assert buckets.allow("late", 61.5) is False
    assert buckets.allow("late", 200.0) is True


def test_limiter_admits_then_rejects_a_few_then_drops_and_counts():
    limiter = NewDialogLimiter(rate=2.0, burst=2.0, rejects_per_window=3, reject_window=10.0)
    verdicts = [limiter.check("10.0.0.1", 0.0) for _ in range(10)]
    assert verdicts == [Verdict.ADMIT] * 2 + [Verdict.REJECT] * 3 + [Verdict.DROP] * 5
    assert (limiter.admitted, limiter.rejected, limiter.dropped) == (2, 3, 5)
    # Back under the rate: admitted again.
    assert limiter.check("10.0.0.1", 0.5) is Verdict.ADMIT
    assert limiter.check("10.0.0.1", 0.5) is Verdict.DROP  # same reject window, already used up
    # A new window answers a few again, so a real proxy learns Retry-After.
    assert limiter.check("10.0.0.1", 10.6) is Verdict.ADMIT
    verdicts = [limiter.check("10.0.0.1", 10.6) for _ in range(5)]
    assert verdicts == [Verdict.ADMIT] + [Verdict.REJECT] * 3 + [Verdict.DROP]
    # Another source is untouched by the first one's flood.
    assert limiter.check("10.0.0.2", 10.6) is Verdict.ADMIT


def test_limiter_under_a_flood_of_1500_per_second_admits_about_the_rate():
    limiter = NewDialogLimiter(rate=20.0, burst=40.0, rejects_per_window=5, reject_window=10.0)
    for i in range(15_000):  # 10 s at 1,500/s
        limiter.check("192.0.2.1", i / 1500)
    assert 235 <= limiter.admitted <= 241  # burst + 10 s x 20/s
    assert limiter.rejected == 5  # one window of 503s (the second opens at exactly 10 s)
    assert limiter.admitted + limiter.rejected + limiter.dropped == 15_000


def test_limiter_memory_is_bounded_under_spoofed_sources():
    limiter = NewDialogLimiter(rate=1.0, burst=1.0, max_keys=50)
    for i in range(5_000):
        limiter.check(f"198.51.{i // 256}.{i % 256}", 0.0)
        limiter.check(f"198.51.{i // 256}.{i % 256}", 0.0)
    assert limiter.tracked == 50
    assert len(limiter._rejects) <= 50


def test_log_throttle_one_line_per_key_per_interval_with_a_count():
    throttle = LogThrottle(interval=10.0)
    assert throttle.check(("bad", "a"), 0.0) == 0
    assert all(throttle.check(("bad", "a"), t / 100) is None for t in range(1, 999))
    assert throttle.check(("bad", "b"), 5.0) == 0
    assert throttle.check(("bad", "a"), 10.0) == 998
    assert throttle.check(("bad", "a"), 10.5) is None
