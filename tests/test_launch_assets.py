"""The cluster assets in `launch/` against what reads them: Ray's cluster schema, rlaif's placement check, its CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from rlaif.config import load_config
from rlaif.placement import check_fits, plan_layout

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
CLUSTERS = ["cluster-onprem.yaml", "cluster-aws.yaml"]


def _yaml(name: str) -> dict:
    return yaml.safe_load((LAUNCH / name).read_text())


def _commands(data: object) -> list[str]:
    """Every string in a (nested) YAML document."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [c for v in data.values() for c in _commands(v)]
    if isinstance(data, list):
        return [c for v in data for c in _commands(v)]
    return []


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_configs_follow_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_yaml(name), schema)


def test_the_aws_cluster_holds_the_gpu_example():
    """The node types at their max_workers, as alive nodes, pass the check `rlaif launch` runs before submitting."""
    cluster = _yaml("cluster-aws.yaml")
    types = cluster["available_node_types"]
    nodes = [types[cluster["head_node_type"]]["resources"]]
    for name, node_type in types.items():
        if name != cluster["head_node_type"]:
            nodes += [node_type["resources"]] * node_type["max_workers"]
    config = load_config(REPO / "examples" / "gpu-cluster.yaml")
    check_fits(plan_layout(config.train), nodes)
    assert config.train.reward_resources == {"sandbox": 1.0}
    assert sum(n.get("sandbox", 0) for n in nodes) >= config.train.reward_workers


def test_the_onprem_cluster_labels_cpu_nodes_for_sandboxes():
    start = " ".join(_yaml("cluster-onprem.yaml")["worker_start_ray_commands"])
    assert re.search(r"""RES='\{"sandbox": \d+\}'""", start) and '--resources="$RES"' in start


def test_rayjob_runs_rlaif_train_with_the_key_from_a_secret():
    job = _yaml("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("rlaif train ")
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for group in cluster["workerGroupSpecs"]:
        assert group["replicas"] >= 1 and group["template"]["spec"]["containers"]
    assert any("sandbox" in str(g["rayStartParams"].get("resources", "")) for g in cluster["workerGroupSpecs"])
    for pod in pods:
        for container in pod["spec"]["containers"]:
            for env in container.get("env", []):
                if "KEY" in env["name"]:
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


@pytest.mark.parametrize("name", ["Dockerfile.gpu", "Dockerfile.cpu"])
def test_dockerfiles_install_an_extra_that_exists(name):
    section = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^(\w+) = \[", section, re.MULTILINE)  # (tomllib is 3.11+; rlaif supports 3.10)
    assert "gpu" in extras and "cpu" in extras
    installed = re.findall(r"-e '\.\[(\w+)\]'", (LAUNCH / name).read_text())
    assert installed and all(extra in extras for extra in installed)


def test_every_rlaif_command_in_the_assets_exists():
    from rlaif.cli.main import app

    commands = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    used = {m for name in [*CLUSTERS, "rayjob.yaml"] for text in _commands(_yaml(name))
            for m in re.findall(r"\brlaif (\w+)", text)}
    used |= set(re.findall(r"\brlaif (\w+)", (REPO / "examples" / "gpu-cluster.yaml").read_text()))
    assert used and used <= commands, used - commands
