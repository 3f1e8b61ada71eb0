"""The judge: a teacher model that scores answers, with retries, limits, a cache, and cost accounting.

A verdict goes: degenerate answer? -> 0, no call. Otherwise for each of `samples` samples: cache
lookup; on a miss, the ledger's go-ahead (budget and rate limits, `rlaif_rewards.ledger`: the run's, shared by
every worker, or the judge's own) -> call -> cost charged -> strict parse -> cached. Retries
(exponential backoff with jitter, at least the server's `retry-after`) cover 429, 5xx, timeouts and
unparseable verdicts; after the last one the verdict is `infra_error` with no score. A failed verdict
is never 0 and never 1. The sample scores are averaged.

Every result keeps the judge's reasoning, its token usage and cost, and whether it came from the cache.
`stats` counts verdicts by outcome, so callers can check nothing was lost or counted twice.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from rlaif.core.config import JudgeConfig
from rlaif.types import RewardResult, Task
from rlaif_rewards import prompts, schemas
from rlaif_rewards.cache import VerdictCache, cache_key
from rlaif_rewards.cost import Price, cost_usd
from rlaif_rewards.ledger import TEMPLATE_TOKENS, JudgeLedger
from rlaif_rewards.providers import Provider, ProviderError, provider_from_endpoint
from rlaif_rewards.rubric import Rubric, is_degenerate
from rlaif_rewards.verdicts import VerdictError, extract_object, parse_group, parse_pointwise


class Judge:
    """Scores answers for one judge config. Share one per process: it holds the cache. `ledger` holds the budget
    and rate limits (a `JudgeLedger` or the run's `RemoteLedger`); by default the judge has its own."""

    def __init__(self, config: JudgeConfig, provider: Provider | None = None, cache: VerdictCache | None = None,
                 ledger: Any = None) -> None:
        self.config = config
        self.provider = provider or provider_from_endpoint(config.endpoint, config.timeout_s, config.extra_body)
        self.cache = cache if cache is not None else VerdictCache(config.cache)
        self.ledger = ledger if ledger is not None else JudgeLedger([config])
        self.price = Price(input_per_mtok=config.input_usd_per_mtok, output_per_mtok=config.output_usd_per_mtok)
        self.stats: Counter[str] = Counter()
        self.usage: Counter[str] = Counter()

    # ---- pointwise and reference-guided --------------------------------------------------------------
    async def score(self, task: Task, answer: str, rubric: Rubric | None = None,
                    reference: str | None = None) -> RewardResult:
        """One answer's verdict (mode `pointwise`, or `reference` when the config says so and a reference exists)."""
        if is_degenerate(answer, task.prompt):
            self.stats["short_circuit"] += 1
            return self._result(0.0, {"short_circuit": "empty or degenerate answer: 0, no judge call"})
        if self.config.mode == "reference" and reference is not None:
            user, use_rubric = prompts.reference_guided(task.prompt, answer, reference), None
        else:
            user, use_rubric = prompts.pointwise(task.prompt, answer, rubric, reference), rubric
        version = rubric.version if use_rubric else ""
        schema = schemas.pointwise(use_rubric)
        samples = await asyncio.gather(*(self._verdict(user, version, i, lambda v: parse_pointwise(v, use_rubric),
                                                       schema) for i in range(self.config.samples)))
        return self._combine(samples)

    # ---- group-relative --------------------------------------------------------------------------------
    async def score_group(self, task: Task, answers: list[str], rubric: Rubric | None = None,
                          reference: str | None = None, seed: int | str = 0) -> list[RewardResult]:
        """All answers of a group in one call per sample, order shuffled per call; one result per answer."""
        live = [i for i, a in enumerate(answers) if not is_degenerate(a, task.prompt)]
        results: list[RewardResult | None] = [None] * len(answers)
        for i in set(range(len(answers))) - set(live):
            self.stats["short_circuit"] += 1
            results[i] = self._result(0.0, {"short_circuit": "empty or degenerate answer: 0, no judge call"})
        if live:
            per_answer: dict[int, list[dict]] = {i: [] for i in live}

            async def one_sample(k: int) -> dict | None:
                order = list(live)
                random.Random(f"{seed}:{k}:{task.id}").shuffle(order)
                ids = {f"A{n + 1}": i for n, i in enumerate(order)}
                user = prompts.group(task.prompt, {aid: answers[i] for aid, i in ids.items()}, rubric, reference)
                verdict = await self._verdict(user, rubric.version if rubric else "", k,
                                              lambda v: parse_group(v, list(ids)), schemas.group(list(ids)))
                if verdict.get("error"):
                    return verdict
                for aid, i in ids.items():
                    per_answer[i].append({**verdict["parsed"][aid], "usage": verdict["usage"],
                                          "cached": verdict["cached"]})
                return None

            failures = [f for f in await asyncio.gather(*(one_sample(k) for k in range(self.config.samples))) if f]
            for i in live:
                results[i] = (self._failed(failures[0]) if failures else
                              self._combine([{"parsed": s, "usage": s["usage"], "cached": s["cached"]}
                                             for s in per_answer[i]]))
        return results  # type: ignore[return-value]

    # ---- one verdict, with cache, limits, retries -------------------------------------------------------
    async def _verdict(self, user: str, rubric_version: str, sample: int, parse, schema: dict[str, Any]
                       ) -> dict[str, Any]:
        """`schema`: the verdict's JSON schema, sent only when the config says `structured`."""
        schema = schema if self.config.structured else None
        sampling = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens, "sample": sample,
                    "extra_body": self.config.extra_body, **({"schema": schema} if schema else {})}
        key = cache_key(self.provider.name, self.provider.model, [prompts.SYSTEM, user], sampling, rubric_version)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return {"parsed": cached["parsed"], "usage": cached["usage"], "cached": True}
        name, prompt_bytes = self.config.name, len(prompts.SYSTEM.encode()) + len(user.encode())
        estimate = prompt_bytes // 4 + self.config.max_tokens
        worst = cost_usd(self.price, prompt_bytes + TEMPLATE_TOKENS, self.config.max_tokens)
        error = "no attempt"
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            ticket = await self.ledger.begin(name, estimate, worst)  # BudgetExhausted ends the run: not a verdict
            reply, failure, charged = None, None, worst  # a call cut off midway may have been billed in full
            try:
                reply = await self.provider.complete(prompts.SYSTEM, user, self.config.max_tokens,
                                                     self.config.temperature, schema)
                charged = cost_usd(self.price, reply.input_tokens, reply.output_tokens)
            except ProviderError as err:
                failure, charged = err, 0.0
            finally:
                await self.ledger.end(ticket, None if reply is None else reply.input_tokens + reply.output_tokens,
                                      charged)
            if failure is not None:
                error = str(failure)
                if not failure.retryable:
                    break
                if failure.retry_after:
                    await self.ledger.pause(name, failure.retry_after)
                backoff = random.uniform(0, min(30.0, self.config.backoff_s * 2**attempt))
                await asyncio.sleep(max(failure.retry_after or 0.0, backoff))
                continue
            usage = {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens, "cost_usd": charged}
            self.usage.update(usage)
            self.stats["calls"] += 1
            try:
                parsed = parse(reply.tool_input if reply.tool_input is not None else extract_object(reply.text))
            except VerdictError as err:
                self.stats["parse_failures"] += 1
                error = f"unparseable verdict: {err}"
                await asyncio.sleep(random.uniform(0, self.config.backoff_s))
                continue
            self.cache.put(key, {"parsed": parsed, "usage": usage})
            return {"parsed": parsed, "usage": usage, "cached": False}
        return {"error": error, "attempts": attempt + 1}

    # ---- results ----------------------------------------------------------------------------------------
    def _combine(self, samples: list[dict[str, Any]]) -> RewardResult:
        failed = next((s for s in samples if s.get("error")), None)
        if failed:
            return self._failed(failed)
        parsed = [s["parsed"] for s in samples]
        score = sum(p["score"] for p in parsed) / len(parsed)
        usage = Counter()
        for s in samples:
            usage.update(s["usage"])
        self.stats["verdicts"] += 1
        return self._result(score, {"reason": parsed[0].get("reason", ""), "samples": parsed, "usage": dict(usage),
                                    "cached": all(s["cached"] for s in samples), "judge": self.config.name,
                                    "model": self.provider.name})

    def _failed(self, failure: dict[str, Any]) -> RewardResult:
        self.stats["failed"] += 1
        return RewardResult(status="infra_error", details={"error": failure["error"], "judge": self.config.name,
                                                           "attempts": failure.get("attempts")})

    def _result(self, score: float, details: dict[str, Any]) -> RewardResult:
        return RewardResult(total=score, components={"judge": score}, details=details)

    async def close(self) -> None:
        await self.provider.close()
