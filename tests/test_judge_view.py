"""What a judge sees of an episode: for repo_repair, the diff of the work tree and the final message, since the
last message of a repair is an empty `submit` call (which, judged alone, scored 0 without a call)."""

from __future__ import annotations

import json

import pytest

from rlaif.env import GradeContext
from rlaif.registry import load_environment
from rlaif_environments.repo_repair.env import judged_submission
from rlaif_rewards.rubric import Criterion, Rubric, RubricJudge
from tests.support.fault_server import JudgeEndpoint, Reply
from tests.test_judge import judge, scored

VERDICT = json.dumps({"criteria": [{"name": "fix", "reason": "yes", "score": 1}], "score": 1.0, "reason": "fixed"})
RUBRIC = Rubric(criteria=[Criterion(name="fix", text="The change fixes the reported bug and nothing else.")])


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_the_judge_of_a_repo_repair_fix_sees_its_diff_and_the_final_message(protocol):
    env = load_environment("repo_repair", {})
    task = env.tasks("train")[0]
    files = {path: text.encode() for path, text in task.data["repo"].items()}
    files.update({path: text.encode() for path, text in task.data["reference_files"].items()})
    files["tests/__pycache__/test_ops.cpython-311.pyc"] = b"\x00compiled"  # what running the tests leaves behind
    submission = judged_submission(task, env.reference_turns(task), files)
    with JudgeEndpoint(Reply(text=VERDICT)) as endpoint:
        j = judge(endpoint.url, protocol)
        result = scored(j, lambda j: RubricJudge(RUBRIC).grade(task, submission, GradeContext(None, {"default": j})))
    assert (result.status, result.total) == ("ok", 1.0)
    sent = str(endpoint.requests[0]["body"]["messages"])
    (path, fixed), = task.data["reference_files"].items()
    removed = next(line for line in task.data["repo"][path].splitlines() if line not in fixed.splitlines())
    added = next(line for line in fixed.splitlines() if line not in task.data["repo"][path].splitlines())
    for shown in (f"--- a/{path}", f"+++ b/{path}", f"-{removed}", f"+{added}", "Applying the fix."):
        assert shown in sent, shown
    assert "pycache" not in sent


def test_an_episode_that_changed_nothing_and_said_nothing_scores_0_without_a_call():
    env = load_environment("repo_repair", {})
    task = env.tasks("train")[0]
    files = {path: text.encode() for path, text in task.data["repo"].items()}
    submission = judged_submission(task, [], files)
    result = scored(judge("http://127.0.0.1:9"), lambda j: RubricJudge(RUBRIC).grade(
        task, submission, GradeContext(None, {"default": j})))
    assert result.total == 0.0 and "short_circuit" in result.details
