"""Group-mode judges in training: a finished GRPO group is judged in one call per sample (`grade_group`), the
answers' order shuffled per call and the scores mapped back to their submissions; gated-out answers are never
shown; a failed group verdict fails the whole group; and a single answer is judged as a group of one, never
pointwise. Through both SDKs against a scripted local endpoint that scores by reading the prompt."""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace

import pytest

from rlaif.core.config import ComponentConfig, JudgeConfig
from rlaif.env import GradeContext, Submission
from rlaif.types import Message
from rlaif_environments.judged_qa.env import JudgedQA
from rlaif_rewards.components import grade, grade_group, group_judged
from rlaif_rewards.judge import Judge
from tests.support.fault_server import JudgeEndpoint, Reply

pytestmark = pytest.mark.unit
PROTOCOLS = pytest.mark.parametrize("protocol", ["openai", "anthropic"])
MARK = "ZEBRA-7"
"""The scripted judge gives 1 to an answer containing this, 0 to the others."""
ENV = JudgedQA(seed=0, count=6, judge="default")
TASK = ENV.tasks("train")[0]
SHOWN = re.compile(r"Answer (A\d+):\n(`{3,})answer \1\n(.*?)\n\2", re.S)


def prompt_of(record: dict) -> str:
    return record["body"]["messages"][-1]["content"]


def shown(record: dict) -> list[str]:
    """The answers a group request shows, in the order shown (A1, A2, ...)."""
    return [text for _, _, text in SHOWN.findall(prompt_of(record))]


def is_group(record: dict) -> bool:
    return "Score every answer" in prompt_of(record)


def group_verdict(record: dict) -> Reply:
    scores = [{"id": answer_id, "score": float(MARK in text), "reason": "marked" if MARK in text else "plain"}
              for answer_id, _, text in SHOWN.findall(prompt_of(record))]
    return Reply(text=json.dumps({"scores": scores}))


def pointwise_verdict(record: dict) -> Reply:
    criteria = [{"name": c["name"], "reason": "half", "score": 0.5} for c in TASK.data["rubric"]["criteria"]]
    return Reply(text=json.dumps({"criteria": criteria, "score": 0.5, "reason": "half"}))


def judge_script(group_reply=group_verdict):
    return lambda record: group_reply(record) if is_group(record) else pointwise_verdict(record)


def make_judge(url: str, protocol: str, monkeypatch, name: str = "default", mode: str = "group", **overrides) -> Judge:
    if protocol == "anthropic":
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        endpoint = "anthropic:judge-model"
    else:
        endpoint = f"openai:{url}/v1:judge-model"
    return Judge(JudgeConfig(name=name, endpoint=endpoint, mode=mode, cache=None, backoff_s=0.01, **overrides))


def graded(judges: list[Judge], work, components: list[ComponentConfig] = ()):
    """`work(ctx)` with a context of `judges` (no sandboxes: judged_qa needs none), judges closed after, one loop."""
    async def go():
        try:
            return await work(GradeContext(None, {j.config.name: j for j in judges}, list(components)))
        finally:
            for j in judges:
                await j.close()

    return asyncio.run(go())


def submission(text: str) -> Submission:
    return Submission(messages=[Message(role="assistant", content=text)])


ANSWERS = ["It adds three to its argument.", "It returns a string.", f"It returns x plus 3. {MARK}",
           "It sorts a list.", "   "]


@PROTOCOLS
def test_a_group_is_judged_in_one_call_per_sample_and_scores_map_back_through_the_shuffle(protocol, monkeypatch):
    orders = {}
    with JudgeEndpoint(judge_script()) as endpoint:
        for seed in ("task-3@17", "task-3@18"):
            endpoint.reset()
            j = make_judge(endpoint.url, protocol, monkeypatch, samples=2)
            results = graded([j], lambda ctx, seed=seed: grade_group(ENV, TASK, [submission(a) for a in ANSWERS],
                                                                     ctx, seed=seed))
            assert len(endpoint.requests) == 2, "one call per sample for the whole group, not one per answer"
            assert all(is_group(r) for r in endpoint.requests)
            orders[seed] = [shown(r) for r in endpoint.requests]
            assert [r.status for r in results] == ["ok"] * 5
            assert [r.components["judge"] for r in results] == [0.0, 0.0, 1.0, 0.0, 0.0]
            assert [r.total for r in results] == [0.0, 0.0, 1.0, 0.0, 0.0]
            assert "short_circuit" in results[4].details["judge"], "the blank answer scored 0 without being shown"
            assert all(r.details["judge"]["group_size"] == 5 for r in results)
            assert j.stats["verdicts"] == 4
    for order in (o for seed_orders in orders.values() for o in seed_orders):
        assert sorted(order) == sorted(ANSWERS[:4]), "every live answer shown once, the blank one never"
    assert orders["task-3@17"] != orders["task-3@18"], "the shuffle depends on the seed"
    marked_at = {o.index(ANSWERS[2]) for seed_orders in orders.values() for o in seed_orders}
    assert len(marked_at) > 1, "the marked answer moved, and its score followed it"


COMPONENTS = [ComponentConfig(kind="format", pattern="ANSWER:"),
              ComponentConfig(kind="judge", name="rank", judge="group", gate="format", weight=2.0)]
"""judged_qa's own judge stays pointwise ("default"); a group judge ranks only answers in the right format."""
GATED = ["ANSWER: it adds three.", f"ANSWER: it returns x plus 3. {MARK}", f"it returns x plus 3. {MARK}",
         "it sorts a list."]


@PROTOCOLS
def test_gated_out_answers_are_not_shown_and_pointwise_judges_stay_per_submission(protocol, monkeypatch):
    with JudgeEndpoint(judge_script()) as endpoint:
        judges = [make_judge(endpoint.url, protocol, monkeypatch, mode="pointwise"),
                  make_judge(endpoint.url, protocol, monkeypatch, name="group")]
        results = graded(judges, lambda ctx: grade_group(ENV, TASK, [submission(a) for a in GATED], ctx, seed=1),
                         COMPONENTS)
    group_calls = [r for r in endpoint.requests if is_group(r)]
    assert len(group_calls) == 1 and sorted(shown(group_calls[0])) == sorted(GATED[:2])
    assert len(endpoint.requests) - len(group_calls) == 4, "the pointwise judge saw each answer on its own"
    assert [r.components for r in results] == [
        {"judge": 0.5, "format": 1.0, "rank": 0.0}, {"judge": 0.5, "format": 1.0, "rank": 1.0},
        {"judge": 0.5, "format": 0.0, "rank": 0.0}, {"judge": 0.5, "format": 0.0, "rank": 0.0}]
    assert [r.total for r in results] == pytest.approx([1.5 / 4, 3.5 / 4, 0.5 / 4, 0.5 / 4]), "the weighted mean"
    assert results[2].details["rank"] == results[3].details["rank"] == {"gated": "format below 1.0"}
    assert results[1].details["rank"]["group_size"] == 2


@PROTOCOLS
@pytest.mark.parametrize("failure", [Reply(kind="status", status=500), Reply(kind="garbage"),
                                     Reply(text="I would rather not grade these.")], ids=["500", "garbage", "prose"])
def test_a_failed_group_verdict_makes_every_result_of_the_group_infra_error(protocol, failure, monkeypatch):
    with JudgeEndpoint(judge_script(lambda record: failure)) as endpoint:
        judges = [make_judge(endpoint.url, protocol, monkeypatch, mode="pointwise"),
                  make_judge(endpoint.url, protocol, monkeypatch, name="group", retries=0)]
        results = graded(judges, lambda ctx: grade_group(ENV, TASK, [submission(a) for a in GATED], ctx, seed=1),
                         COMPONENTS)
    assert sum(is_group(r) for r in endpoint.requests) == 1
    assert [(r.status, r.total) for r in results] == [("infra_error", None)] * 4, "never partly scored"
    for r in results:
        assert r.components["rank"] is None and "every answer of the group (4)" in r.details["rank"]["group"]
        assert r.details["rank"]["judge"] == "group" and r.details["rank"]["error"]
        assert r.components["judge"] == 0.5, "the other components are kept"


@PROTOCOLS
def test_grading_one_answer_with_a_group_judge_is_a_group_of_one_not_pointwise(protocol, monkeypatch):
    with JudgeEndpoint(judge_script()) as endpoint:
        j = make_judge(endpoint.url, protocol, monkeypatch)
        result = graded([j], lambda ctx: grade(ENV, TASK, submission(f"It returns x plus 3. {MARK}"), ctx))
    (request,) = endpoint.requests
    assert is_group(request) and shown(request) == [f"It returns x plus 3. {MARK}"]
    assert (result.status, result.total) == ("ok", 1.0)
    assert result.details["judge"]["group_size"] == 1


def test_group_judged_says_whether_a_judge_component_uses_a_group_mode_judge():
    judges = [JudgeConfig(name="default"), JudgeConfig(name="group", mode="group")]
    assert group_judged(COMPONENTS, judges)
    assert not group_judged(COMPONENTS[:1], judges)
    assert not group_judged([ComponentConfig(kind="judge")], judges)
    assert not group_judged([ComponentConfig(kind="format", pattern="x", judge="group")], judges)
    assert group_judged(ENV.graders(TASK), [JudgeConfig(name="default", mode="group")]), "environments' judges count"
    as_in_context = {"default": SimpleNamespace(config=JudgeConfig(mode="group"))}  # a Judge's config, by name
    assert group_judged(ENV.graders(TASK), as_in_context)


@pytest.mark.vllm
@PROTOCOLS
def test_a_real_vllm_judge_judges_a_group_in_one_call(vllm_server, protocol, monkeypatch):
    """The tiny model on a real vLLM server: through the openai SDK, structured outputs force the group verdict's
    form, so one call scores all four answers; through the anthropic SDK nothing forces it, the verdict does not
    parse, and the whole group is infra_error (each retry one call for the whole group, never per answer)."""
    item = r'\{"id": "A%d", "score": (0|1|0\.[0-9]), "reason": "[a-z ]{1,12}"\}'
    regex = r'\{"scores": \[' + ", ".join(item % (i + 1) for i in range(4)) + r"\]\}"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", vllm_server)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-local")
    endpoint = f"openai:{vllm_server}/v1:tiny" if protocol == "openai" else "anthropic:tiny"
    j = Judge(JudgeConfig(endpoint=endpoint, mode="group", cache=None, retries=1, backoff_s=0.01, max_tokens=160,
                          extra_body={"structured_outputs": {"regex": regex}} if protocol == "openai" else None))
    results = graded([j], lambda ctx: grade_group(ENV, TASK, [submission(a) for a in ANSWERS[:4]], ctx, seed="g@1"))
    if protocol == "openai":
        assert j.stats["calls"] == 1 and [r.status for r in results] == ["ok"] * 4
        assert all(0.0 <= r.components["judge"] <= 1.0 and r.details["judge"]["group_size"] == 4 for r in results)
    else:
        assert j.stats["calls"] == 2 and [r.status for r in results] == ["infra_error"] * 4
        assert all("group verdict" in r.details["judge"]["group"] for r in results)
