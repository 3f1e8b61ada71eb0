"""Judge call prices and the run's spend budget, in US dollars.

Prices are USD per million tokens (`Price`), so `cost_usd(Price(input_per_mtok=3, output_per_mtok=15),
1_000, 200)` is 0.006. A judge without a price costs 0.0.

`SpendBudget` is used in one of two ways. Checked *before* each call (`check`, which raises `BudgetExhausted`
once spent >= limit) and charged *after* it (`charge`): the spend can exceed the limit by the calls in flight
when it runs out (what `rlaif collect` does, whose attempts have no cost bound). Or with reservations, so
the spend never exceeds the limit: `reserve(worst)` before a call holds its worst-case cost (it refuses when
spent + held + worst would pass the limit) and `settle(worst, actual)` after it charges the actual cost and
releases the hold (what the judges' ledger does, `rlaif_rewards.ledger`). On `BudgetExhausted` the caller is
expected to stop issuing judge calls and end the run cleanly (a user-facing error, not a crash), not to retry.

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

    def __init__(self, spent_usd: float, limit_usd: float, judge: str | None = None) -> None:
        self.spent_usd, self.limit_usd, self.judge = spent_usd, limit_usd, judge
        key = f"reward.judges.{judge}.budget_usd" if judge else "the judge's budget_usd"
        super().__init__(f"judge budget exhausted: spent {spent_usd:.4f} of budget {limit_usd:.4f} USD; "
                         f"raise {key} or stop")

    def __reduce__(self) -> tuple:  # it crosses processes (Ray actors, the HTTP front) as itself
        return BudgetExhausted, (self.spent_usd, self.limit_usd, self.judge)


class SpendBudget:
    """Running judge spend against an optional USD limit (see module docstring)."""

    def __init__(self, limit_usd: float | None) -> None:
        if limit_usd is not None and not (math.isfinite(limit_usd) and limit_usd >= 0):
            raise ValueError(f"limit_usd must be a finite number >= 0 or None, got {limit_usd}")
        self.limit_usd = limit_usd
        self._spent = 0.0
        self._held = 0.0
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

    def reserve(self, worst_usd: float) -> bool:
        """Hold `worst_usd` for a call about to start, if spent + held + it fits in the limit; False otherwise."""
        if not (math.isfinite(worst_usd) and worst_usd >= 0):
            raise ValueError(f"a reservation must be a finite number >= 0, got {worst_usd}")
        with self._lock:
            if self.limit_usd is not None and self._spent + self._held + worst_usd > self.limit_usd:
                return False
            self._held += worst_usd
            return True

    def settle(self, held_usd: float, actual_usd: float) -> None:
        """Release a call's reservation and charge what it actually cost."""
        if not (math.isfinite(actual_usd) and actual_usd >= 0):
            raise ValueError(f"a charge must be a finite number >= 0, got {actual_usd}")
        with self._lock:
            self._held = max(0.0, self._held - held_usd)
            self._spent += actual_usd
