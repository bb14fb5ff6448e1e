"""When to try a DialNexa request again: a small pure policy, table-tested.

- A request that provably never left (the connection could not be made) may always be retried.
- A 429 is DialNexa refusing before doing anything: retried, honouring ``Retry-After`` up to a cap.
- Everything else that is ambiguous (timeouts, dropped connections, 502/503/504) is retried only for idempotent
  requests (GETs, PATCH/DELETE by id) — never for the billable call-creating POSTs, which could run twice.
- Other statuses are answers, not failures: never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Failure(Enum):
    CONNECT = "connect"  # never reached DialNexa
    TIMEOUT = "timeout"  # sent, no answer in time: may have been processed
    NETWORK = "network"  # connection dropped mid-request: may have been processed
    STATUS = "status"  # an HTTP error status came back


RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 2.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("RetryPolicy needs max_attempts >= 1 and 0 <= base_delay <= max_delay")

    def delay(
        self,
        *,
        attempt: int,
        idempotent: bool,
        failure: Failure,
        status: int | None = None,
        retry_after: float | None = None,
        jitter: float = 0.5,
    ) -> float | None:
        """Seconds to wait before the next try, or None to give up.

        ``attempt`` is the 1-based number of the try that just failed; ``jitter`` is a number in [0, 1) (random in
        production, fixed in tests) that spreads the backoff between 50% and 150% of its nominal value.
        """
        if attempt >= self.max_attempts:
            return None
        if failure is Failure.STATUS:
            if status == 429:
                if retry_after is not None:
                    return retry_after if retry_after <= self.max_retry_after else None
            elif not (idempotent and status in RETRYABLE_STATUSES):
                return None
        elif failure is not Failure.CONNECT and not idempotent:
            return None
        nominal = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(nominal * (0.5 + jitter))
