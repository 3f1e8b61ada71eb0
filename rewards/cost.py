"""Judge call prices and the run's spend budget, in US dollars.

Prices are USD per million tokens (`Price`), so `cost_usd(Price(input_per_mtok=3, output_per_mtok=15),
1_000, 200)` is 0.006. A judge without a price costs 0.0.

`SpendBudget` is checked *before* each call (`check`, which raises `BudgetExhausted` once spent >= limit)
and charged *after* it with the actual cost (`charge`). A call already in flight when the budget runs out
is still charged in full, so the spend can exceed the limit by at most the cost of the calls in flight at
that moment (at most the judge's concurrency). On `BudgetExhausted` the caller is expected to stop issuing
judge calls and end the run cleanly (a user-facing error, not a crash), not to retry.

`SpendBudget` is thread-safe: a lock guards the running total, so one budget may be shared by threads
and by coroutines of one or several event loops (each call is a few arithmetic operations, never waits).
"""

from __future__ import annotations

import math
import threading

from pydantic import BaseModel, ConfigDict, Field

from rlaif.errors import RlaifError


class Price(BaseModel):
    """What a judge charges, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(default=0.0, ge=0)
    """USD per million input (prompt) tokens."""
    output_per_mtok: float = Field(default=0.0, ge=0)
    """USD per million output (verdict) tokens."""


def cost_usd(price: Price | None, input_tokens: int, output_tokens: int) -> float:
    """The USD cost of one call; 0.0 when `price` is None."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got input={input_tokens} output={output_tokens}")
    if price is None:
        return 0.0
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000


class BudgetExhausted(RlaifError):
    """The run's judge spend reached its limit; no further judge call may start."""

    def __init__(self, spent_usd: float, limit_usd: float) -> None:
        self.spent_usd = spent_usd
        self.limit_usd = limit_usd
        super().__init__(
            f"judge budget exhausted: spent {spent_usd:.4f} of budget {limit_usd:.4f} USD; "
            "raise the budget (judge.budget_usd) or stop"
        )


class SpendBudget:
    """Running judge spend against an optional USD limit (see module docstring)."""

    def __init__(self, limit_usd: float | None) -> None:
        if limit_usd is not None and not (math.isfinite(limit_usd) and limit_usd >= 0):
            raise ValueError(f"limit_usd must be a finite number >= 0 or None, got {limit_usd}")
        self.limit_usd = limit_usd
        self._spent = 0.0
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        """USD charged so far."""
        with self._lock:
            return self._spent

    @property
    def remaining_usd(self) -> float | None:
        """USD left before the limit (0.0 once reached or exceeded); None when unlimited."""
        if self.limit_usd is None:
            return None
        with self._lock:
            return max(0.0, self.limit_usd - self._spent)

    @property
    def exhausted(self) -> bool:
        """Whether the spend has reached the limit (never, when unlimited)."""
        if self.limit_usd is None:
            return False
        with self._lock:
            return self._spent >= self.limit_usd

    def check(self) -> None:
        """Raise `BudgetExhausted` once spent >= limit; call it before issuing each judge call."""
        if self.limit_usd is None:
            return
        with self._lock:
            spent = self._spent
        if spent >= self.limit_usd:
            raise BudgetExhausted(spent, self.limit_usd)

    def charge(self, usd: float) -> None:
        """Add the actual cost of a finished call (also when the budget ran out while it was in flight)."""
        if not (math.isfinite(usd) and usd >= 0):
            raise ValueError(f"a charge must be a finite number >= 0, got {usd}")
        with self._lock:
            self._spent += usd
