"""
The signaling server's rate limit per connection: a token bucket with the time passed in.
"""

from __future__ import annotations

from signaling_server.ratelimit import TokenBucket


def test_token_bucket():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after 0.5 s
    assert not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # never above burst
    assert not bucket.take(50.0)  # time going backwards adds nothing


def test_token_bucket_refills_fractionally_and_caps_at_burst():
    bucket = TokenBucket(rate=4.0, burst=2, now=10.0)
    assert bucket.take(10.0) and bucket.take(10.0) and not bucket.take(10.0)
    assert not bucket.take(10.2)  # 0.8 of a token
    assert bucket.take(10.25)  # 0.8 + 0.2 = 1.0
    assert not bucket.take(10.25)
    assert bucket.take(1e9) and bucket.take(1e9) and not bucket.take(1e9)


def test_token_bucket_clock_going_back_then_forward_adds_nothing():
    bucket = TokenBucket(rate=1.0, burst=2, now=100.0)
    assert bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(50.0)
    assert not bucket.take(100.0)  # no time passed beyond 100.0
