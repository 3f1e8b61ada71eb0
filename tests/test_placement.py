"""The layout a config asks for, and the refusal of one the cluster can never hold (pure; no Ray)."""

from __future__ import annotations

import pytest

from rlaif.cluster.placement import check_fits, plan_layout, usable
from rlaif.core.config import TrainConfig
from rlaif.errors import RlaifError

GPU_NODE = {"CPU": 16.0, "GPU": 4.0, "memory": 1e11, "node:10.0.0.2": 1.0}
CPU_NODE = {"CPU": 32.0, "sandbox": 8.0, "object_store_memory": 1e9}


def test_learners_are_packed_and_engines_spread_each_with_their_resources():
    t = TrainConfig(learners=2, learner_gpus=1, learner_cpus=4, learner_resources={"learner": 1},
                    rollout_workers=3, rollout_gpus=1, rollout_cpus=2, reward_workers=4, reward_cpus=1,
                    reward_resources={"sandbox": 1})
    layout = plan_layout(t)
    assert [(g.strategy, g.roles) for g in layout.groups] == [
        ("PACK", ["learner", "learner"]), ("SPREAD", ["rollout worker"] * 3)]
    assert layout.groups[0].bundles[0] == {"CPU": 4.0, "GPU": 1.0, "learner": 1.0}
    assert layout.groups[1].bundles[2] == {"CPU": 2.0, "GPU": 1.0}
    assert layout.reward == {"CPU": 1.0, "sandbox": 1.0}
    assert layout.slot("rollout worker", 2) == (1, 2)
    assert len([a for a in layout.actors() if a[0] == "reward worker"]) == 4


def test_colocate_puts_everything_in_one_strict_pack_group():
    layout = plan_layout(TrainConfig(colocate=True, learner_gpus=0.5, rollout_gpus=0.5, rollout_workers=1))
    [group] = layout.groups
    assert group.strategy == "STRICT_PACK"
    assert group.roles == ["learner", "rollout worker"]
    assert layout.slot("rollout worker", 0) == (0, 1)


def test_an_actor_without_resources_still_gets_a_bundle():
    layout = plan_layout(TrainConfig(learner_cpus=0, rollout_cpus=0))
    assert layout.groups[0].bundles == [{"CPU": 0.01}]


def test_a_layout_that_fits_passes():
    t = TrainConfig(learners=2, learner_gpus=1, rollout_workers=6, rollout_gpus=1, reward_workers=8,
                    reward_resources={"sandbox": 1})
    check_fits(plan_layout(t), [GPU_NODE, GPU_NODE, CPU_NODE])


@pytest.mark.parametrize(("train", "message"), [
    ({"learners": 2, "learner_gpus": 1, "rollout_workers": 8, "rollout_gpus": 1},
     "the run needs 10 GPU (learners 2, rollout workers 8) but the Ray cluster has 8; lower train.learner_gpus / "
     "train.rollout_gpus or add nodes"),
    ({"reward_workers": 9, "reward_resources": {"sandbox": 1}},
     "the run needs 9 sandbox (reward workers 9) but the Ray cluster has 8"),
    ({"rollout_resources": {"tpu": 1}},
     "the run needs 1 tpu (rollout workers 1) but the Ray cluster has 0; lower train.rollout_resources or add nodes "
     "started with `ray start --resources='{\"tpu\": N}'`"),
    ({"rollout_gpus": 8},
     "one rollout worker needs {CPU: 1, GPU: 8} on one node, but no node has that much (largest: {CPU: 16, GPU: 4})"),
    ({"colocate": True, "learner_gpus": 2, "rollout_workers": 2, "rollout_gpus": 2},
     "train.colocate puts the learners and rollout workers on one node, which needs {CPU: 3, GPU: 6}"),
])
def test_a_layout_that_can_never_fit_names_the_shortfall(train, message):
    with pytest.raises(RlaifError) as err:
        check_fits(plan_layout(TrainConfig(**train)), [GPU_NODE, GPU_NODE, CPU_NODE])
    assert str(err.value).startswith(message)


def test_an_empty_cluster_is_refused():
    with pytest.raises(RlaifError, match="no alive node"):
        check_fits(plan_layout(TrainConfig()), [])


def test_usable_drops_rays_internal_resources():
    assert usable(GPU_NODE) == {"CPU": 16.0, "GPU": 4.0}
