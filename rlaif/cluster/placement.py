"""Where a run's actors go on a Ray cluster, and the refusal of a layout the cluster cannot hold.

`plan_layout` turns `train.*` into placement groups: the learners packed together (their gradients meet
every step), the rollout engines spread over the nodes (a lost node takes as few as possible), or, with
`train.colocate`, all of them in one STRICT_PACK group on one node. Reward workers stay outside any group:
Ray restarts them wherever their resources are (custom resources such as `sandbox` steer them to nodes
with a Docker engine).

`check_fits` refuses at once, naming the shortfall, what can never be placed: a resource the cluster
lacks in total, one actor (or a colocated group) larger than every node. What merely has to wait for
resources that are busy is left to Ray, under the placement timeout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rlaif.core.config import TrainConfig
from rlaif.errors import RlaifError

SANDBOX_RESOURCE = "sandbox"
"""The custom Ray resource that marks nodes with a Docker engine for sandboxes (`ray start --resources`)."""

_KEYS = {"learner": "train.learner_", "rollout worker": "train.rollout_", "reward worker": "train.reward_"}


@dataclass(frozen=True)
class Group:
    """One placement group: its bundles (one per actor, in `roles` order) and Ray strategy."""

    roles: list[str]
    bundles: list[dict[str, float]]
    strategy: str


@dataclass(frozen=True)
class Layout:
    groups: list[Group]
    reward: dict[str, float]
    reward_workers: int

    def slot(self, role: str, index: int) -> tuple[int, int]:
        """(group, bundle) of the `index`-th actor of `role` ("learner" or "rollout worker")."""
        seen = 0
        for g, group in enumerate(self.groups):
            for b, r in enumerate(group.roles):
                if r == role:
                    if seen == index:
                        return g, b
                    seen += 1
        raise IndexError(f"no {role} {index} in the layout")

    def actors(self) -> Iterable[tuple[str, dict[str, float], str]]:
        """(role, resources, strategy) of every actor, reward workers included."""
        for group in self.groups:
            for role, bundle in zip(group.roles, group.bundles, strict=True):
                yield role, bundle, group.strategy
        for _ in range(self.reward_workers):
            yield "reward worker", self.reward, "none"


def _bundle(cpus: float, gpus: float, custom: Mapping[str, float]) -> dict[str, float]:
    bundle = {"CPU": cpus, "GPU": gpus, **custom}
    return {k: float(v) for k, v in bundle.items() if v > 0} or {"CPU": 0.01}  # Ray refuses an empty bundle


def plan_layout(t: TrainConfig) -> Layout:
    learner = _bundle(t.learner_cpus, t.learner_gpus, t.learner_resources)
    rollout = _bundle(t.rollout_cpus, t.rollout_gpus, t.rollout_resources)
    learners = Group(["learner"] * t.learners, [learner] * t.learners, "PACK")
    rollouts = Group(["rollout worker"] * t.rollout_workers, [rollout] * t.rollout_workers, "SPREAD")
    if t.colocate:
        groups = [Group(learners.roles + rollouts.roles, learners.bundles + rollouts.bundles, "STRICT_PACK")]
    else:
        groups = [learners, rollouts]
    return Layout(groups, _bundle(t.reward_cpus, 0.0, t.reward_resources), t.reward_workers)


def usable(resources: Mapping[str, float]) -> dict[str, float]:
    """A node's resources without Ray's internal ones (node:<ip>, memory, object store)."""
    return {k: float(v) for k, v in resources.items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")}


def local_node(t: TrainConfig) -> dict[str, float]:
    """The resources of the local Ray a run starts (`rlaif.train.actors.start_ray`): CPUs enough for the layout (at
    least the machine's), the GPUs Ray will detect (`CUDA_VISIBLE_DEVICES`, else the NVIDIA driver's), no custom
    resources."""
    cpus = t.learners * t.learner_cpus + t.rollout_workers * t.rollout_cpus + t.reward_workers * t.reward_cpus + 1
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")])
    else:
        driver = Path("/proc/driver/nvidia/gpus")
        gpus = len(list(driver.iterdir())) if driver.is_dir() else 0
    return {"CPU": float(max(os.cpu_count() or 1, math.ceil(cpus))), "GPU": float(gpus)}


def check_fits(layout: Layout, nodes: list[Mapping[str, float]], where: str | None = None) -> None:
    """Raise RlaifError naming the shortfall when `nodes` (each alive node's total resources) can never hold
    the layout. `where` names the one node of a local Ray (default: the nodes are a Ray cluster's)."""
    nodes = [usable(n) for n in nodes]
    if not nodes:
        raise RlaifError("the Ray cluster has no alive node; start one (`ray start --head`) and try again")
    actors = list(layout.actors())
    needs: dict[str, dict[str, float]] = {}
    for role, bundle, _ in actors:
        for kind, amount in bundle.items():
            needs.setdefault(kind, {}).setdefault(role, 0.0)
            needs[kind][role] += amount
    for kind, by_role in needs.items():
        have = sum(n.get(kind, 0.0) for n in nodes)
        need = sum(by_role.values())
        if need > have + 1e-9:
            parts = ", ".join(f"{role}s {amount:g}" for role, amount in by_role.items())
            keys = " / ".join(f"{_KEYS[role]}{_suffix(kind)}" for role in by_role)
            grow = ("run it on a Ray cluster that has them (train.ray_address)" if where
                    else f"add nodes{_how_to_add(kind)}")
            raise RlaifError(f"the run needs {need:g} {kind} ({parts}) but {where or 'the Ray cluster'} has "
                             f"{have:g}; lower {keys} or {grow}")
    for role, bundle, _ in actors:
        if not any(_fits(bundle, n) for n in nodes):
            raise RlaifError(f"one {role} needs {_show(bundle)} on one node, but no node has that much "
                             f"(largest: {_show(_largest(nodes, bundle))}); lower {_KEYS[role]}* or add a bigger node")
    for group in layout.groups:
        if group.strategy == "STRICT_PACK":
            total = _sum(group.bundles)
            if not any(_fits(total, n) for n in nodes):
                raise RlaifError(f"train.colocate puts the learners and rollout workers on one node, which needs "
                                 f"{_show(total)}; no node has that much (largest: {_show(_largest(nodes, total))}); "
                                 "set train.colocate=false or lower their resources")


def _suffix(kind: str) -> str:
    return {"CPU": "cpus", "GPU": "gpus"}.get(kind, "resources")


def _how_to_add(kind: str) -> str:
    if kind in ("CPU", "GPU"):
        return ""
    return f" started with `ray start --resources='{{\"{kind}\": N}}'`"


def _fits(need: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items())


def _sum(bundles: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for k, v in bundle.items():
            total[k] = total.get(k, 0.0) + v
    return total


def _largest(nodes: list[dict[str, float]], need: Mapping[str, float]) -> dict[str, float]:
    """The node that covers most of `need`, shown by the resources `need` names."""
    best = max(nodes, key=lambda n: sum(min(n.get(k, 0.0), v) / v for k, v in need.items() if v))
    return {k: best.get(k, 0.0) for k in need}


def _show(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items()) + "}"


def alive_nodes() -> list[dict[str, float]]:
    """The total resources of every alive node of the connected Ray cluster."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def check_sandbox_nodes(backend: str, timeout_s: float = 120.0) -> None:
    """On every alive node with the `sandbox` resource, check that sandboxes can start (a Docker engine
    answers, or bubblewrap is installed); raise RlaifError naming the first node where they cannot."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(SANDBOX_RESOURCE, 0) > 0]
    probe = ray.remote(sandbox_problem)
    refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(backend) for n in nodes]
    for node, problem in zip(nodes, ray.get(refs, timeout=timeout_s), strict=True):
        if problem:
            raise RlaifError(f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) has the `{SANDBOX_RESOURCE}` "
                             f"resource but cannot run {backend} sandboxes: {problem}; fix that node "
                             f"(launch/host-setup.sh) or start it without the `{SANDBOX_RESOURCE}` resource")


def sandbox_problem(backend: str) -> str | None:
    """Why sandboxes of `backend` cannot start on this machine (its first clause), or None when they can."""
    import shutil

    if backend == "local":
        return None if shutil.which("bwrap") else "bubblewrap (bwrap) is not installed"
    from rlaif.sandbox.engine import docker_client

    try:
        docker_client()
    except RlaifError as err:
        return str(err).split(";")[0]
    return None
