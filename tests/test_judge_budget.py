"""A judge's budget and rate limits belong to the run: one ledger, whichever worker calls, across restarts.

The judge is a scripted endpoint behind the real `openai` SDK; each call reports the same usage, so the
budget allows a known number of calls, and the endpoint counts what was really sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from rlaif.core.config import JudgeConfig
from rlaif.errors import RlaifError
from rlaif.types import Task
from rlaif_rewards import ledger as ledger_module
from rlaif_rewards.cost import BudgetExhausted
from rlaif_rewards.judge import Judge
from rlaif_rewards.ledger import JudgeLedger
from tests.support.fault_server import JudgeEndpoint, Reply

TASK = Task(id="q1", env="test", prompt="What does `def f(x): return x + 3` return?", reference="x plus 3")
TOKENS = 500  # input tokens each call reports; the prompts here have more bytes than that, so the bound holds
PRICE = 10.0  # USD per million input tokens: each call costs 0.005
COST = TOKENS * PRICE / 1e6


def judge_config(url: str, **overrides) -> JudgeConfig:
    return JudgeConfig(**{"name": "j", "endpoint": f"openai:{url}/v1:j", "cache": None, "input_usd_per_mtok": PRICE,
                          "retries": 0, **overrides})


class Concurrency:
    """A script that answers after `delay_s` and remembers how many requests it held at once."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s, self.now, self.most = delay_s, 0, 0
        self._lock = threading.Lock()

    def __call__(self, request: dict) -> Reply:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.delay_s)
        with self._lock:
            self.now -= 1
        return Reply(text='{"score": 1, "reason": "ok"}', input_tokens=TOKENS, output_tokens=0)


@pytest.mark.unit
def test_three_workers_judges_share_one_budget_and_one_concurrency_limit():
    """Three judges (what three reward workers hold) on one ledger: at most `concurrency` calls at once in all,
    and never a call beyond the budget, however many answers are waiting."""
    n = 7
    script = Concurrency()
    with JudgeEndpoint(script) as endpoint:
        config = judge_config(endpoint.url, concurrency=2, budget_usd=n * COST)

        async def go():
            ledger = JudgeLedger([config])
            judges = [Judge(config, ledger=ledger) for _ in range(3)]
            try:
                outcomes = await asyncio.gather(*(judges[i % 3].score(TASK, f"answer {i}") for i in range(30)),
                                                return_exceptions=True)
            finally:
                for j in judges:
                    await j.close()
            return outcomes, ledger.spend()["j"]

        outcomes, spend = asyncio.run(go())
    scored = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BudgetExhausted)]
    assert len(scored) + len(refused) == 30 and refused, outcomes
    assert len(endpoint.requests) == spend["calls"] == len(scored) <= n
    assert spend["spent_usd"] <= n * COST + 1e-12, "0 calls beyond the budget"
    assert script.most <= 2, "the concurrency limit holds across the workers' judges"
    assert "reward.judges.j.budget_usd" in str(refused[0])


@pytest.mark.unit
def test_a_call_that_would_not_fit_waits_for_the_calls_in_flight_to_settle():
    """Calls in flight hold their worst case; one that fits once they settle for less waits instead of failing."""
    config = JudgeConfig(name="j", endpoint="openai:http://127.0.0.1:9/v1:j", budget_usd=1.0, timeout_s=5)

    async def go():
        ledger = JudgeLedger([config])
        first = await ledger.begin("j", 10, 0.6)
        second = asyncio.ensure_future(ledger.begin("j", 10, 0.6))  # 0.6 held + 0.6 > 1: waits
        await asyncio.sleep(0.05)
        waited = not second.done()
        await ledger.end(first, 10, 0.1)  # it cost 0.1: 0.1 spent + 0.6 fits
        await ledger.end(await second, 10, 0.1)
        with pytest.raises(BudgetExhausted):  # 0.2 spent + 0.9 cannot fit even with none in flight
            await ledger.begin("j", 10, 0.9)
        return waited, ledger.spend()["j"]

    waited, spend = asyncio.run(go())
    assert waited and spend["spent_usd"] == pytest.approx(0.2) and spend["calls"] == 2


@pytest.mark.unit
def test_a_ticket_whose_caller_died_is_charged_its_worst_case_and_frees_its_slot(monkeypatch):
    monkeypatch.setattr(ledger_module, "LEASE_SLACK_S", 0.0)
    monkeypatch.setattr(ledger_module, "SWEEP_S", 0.02)
    config = JudgeConfig(name="j", endpoint="openai:http://127.0.0.1:9/v1:j", concurrency=1, timeout_s=0.1)

    async def go():
        ledger = JudgeLedger([config])
        await ledger.begin("j", 10, 0.25)  # never ended: its worker died
        started = time.monotonic()
        ticket = await asyncio.wait_for(ledger.begin("j", 10, 0.25), 5)  # the one slot comes back after the lease
        waited = time.monotonic() - started
        await ledger.end(ticket, 10, 0.0)
        return waited, ledger.spend()["j"]

    waited, spend = asyncio.run(go())
    assert 0.05 < waited < 2 and spend["spent_usd"] == pytest.approx(0.25)


@pytest.mark.unit
def test_the_spend_survives_in_the_run_directory_and_a_raised_budget_applies(tmp_path):
    path = tmp_path / "judge_spend.json"
    config = JudgeConfig(name="j", endpoint="openai:http://127.0.0.1:9/v1:j", budget_usd=1.0)

    async def spend(ledger: JudgeLedger, usd: float) -> None:
        await ledger.end(await ledger.begin("j", 10, usd), 10, usd)

    first = JudgeLedger([config], path)
    asyncio.run(spend(first, 0.7))
    again = JudgeLedger([config], path)  # a restarted run starts from what was spent, not from $0
    assert again.spend()["j"] == {"spent_usd": pytest.approx(0.7), "calls": 1, "limit_usd": 1.0}
    with pytest.raises(BudgetExhausted, match=r"spent 0\.7000 of budget 1\.0000"):
        asyncio.run(spend(again, 0.5))
    raised = JudgeLedger([config.model_copy(update={"budget_usd": 2.0})], path)
    asyncio.run(spend(raised, 0.5))
    assert json.loads(path.read_text()) == {"judges": {"j": {"spent_usd": pytest.approx(1.2), "calls": 2}}}
    path.write_text("{not json")
    with pytest.raises(RlaifError, match=r"judge_spend\.json is unreadable"):
        JudgeLedger([config], path)

