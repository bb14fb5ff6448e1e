"""The retry policy as a table: which failures are retried, for which requests, after how long."""

from __future__ import annotations

import pytest

from webcall.dialnexa.retry import Failure, RetryPolicy

P = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=2.0, max_retry_after=10.0)

CASES = [
    # (idempotent, failure, status, retry_after, attempt, expected delay or None)
    (True, Failure.CONNECT, None, None, 1, 0.2),
    (False, Failure.CONNECT, None, None, 1, 0.2),  # never left: safe even for the billable POST
    (True, Failure.TIMEOUT, None, None, 1, 0.2),
    (False, Failure.TIMEOUT, None, None, 1, None),  # may have been processed: no blind retry
    (True, Failure.NETWORK, None, None, 2, 0.4),
    (False, Failure.NETWORK, None, None, 1, None),
    (True, Failure.STATUS, 502, None, 1, 0.2),
    (True, Failure.STATUS, 503, None, 1, 0.2),
    (True, Failure.STATUS, 504, None, 2, 0.4),
    (False, Failure.STATUS, 503, None, 1, None),
    (False, Failure.STATUS, 502, None, 1, None),
    (True, Failure.STATUS, 500, None, 1, None),
    (True, Failure.STATUS, 400, None, 1, None),
    (True, Failure.STATUS, 401, None, 1, None),
    (True, Failure.STATUS, 404, None, 1, None),
    (False, Failure.STATUS, 402, None, 1, None),
    (True, Failure.STATUS, 429, 3.0, 1, 3.0),  # Retry-After honoured exactly
    (False, Failure.STATUS, 429, 1.5, 1, 1.5),  # a 429 is a refusal: safe for POST
    (True, Failure.STATUS, 429, 60.0, 1, None),  # longer than the cap: give up now
    (True, Failure.STATUS, 429, None, 1, 0.2),  # no Retry-After: backoff
    (True, Failure.CONNECT, None, None, 3, None),  # attempts exhausted
    (True, Failure.STATUS, 503, None, 3, None),
]


@pytest.mark.parametrize(("idempotent", "failure", "status", "retry_after", "attempt", "expected"), CASES)
def test_policy_table(
    idempotent: bool,
    failure: Failure,
    status: int | None,
    retry_after: float | None,
    attempt: int,
    expected: float | None,
) -> None:
    got = P.delay(
        attempt=attempt, idempotent=idempotent, failure=failure, status=status, retry_after=retry_after, jitter=0.5
    )
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=2.0)
    delays = [policy.delay(attempt=a, idempotent=True, failure=Failure.CONNECT, jitter=0.0) for a in range(1, 6)]
    assert delays == [0.25, 0.5, 1.0, 1.0, 1.0]
    high = policy.delay(attempt=5, idempotent=True, failure=Failure.CONNECT, jitter=0.999)
    assert high is not None and 2.9 < high < 3.0


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
