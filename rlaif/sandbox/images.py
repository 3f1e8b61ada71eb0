"""Sandbox images built without a registry: a debootstrap root filesystem, then Dockerfile layers.

Tags are content-addressed (`rlaif/base:<hash of the recipe>`), so an unchanged recipe is never
rebuilt; `rlaif/base:latest` points at the newest build. The hash covers the recipe files, not the
packages the mirror serves on the day of the build.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from docker.errors import BuildError, ImageNotFound

from rlaif.errors import RlaifError
from rlaif.sandbox.engine import docker_client

RECIPES = Path(__file__).parent / "recipes"
BASE = "rlaif/base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def recipe_hash(recipe: Path) -> str:
    """Twelve hex digits of the sha256 of every file in a recipe folder, names included."""
    digest = hashlib.sha256()
    for path in sorted(p for p in recipe.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(recipe)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def image_exists(tag: str) -> bool:
    try:
        docker_client().images.get(tag)
    except ImageNotFound:
        return False
    return True


def build_base_image(log: Callable[[str], None] = print, mirror: str | None = None) -> str:
    """Build (or find) the base image; returns its content-addressed tag."""
    recipe = RECIPES / "base"
    digest = recipe_hash(recipe)
    tag = f"{BASE}:{digest}"
    client = docker_client()
    if image_exists(tag):
        log(f"image {tag} is up to date")
    else:
        rootfs = f"rlaif/rootfs:{digest}"
        if not image_exists(rootfs):
            _import_rootfs(recipe / "rootfs.txt", rootfs, mirror or apt_mirror(), log)
        log(f"building {tag} from {rootfs}")
        try:
            client.images.build(
                path=str(recipe), tag=tag, buildargs={"ROOTFS": rootfs}, network_mode="none", rm=True
            )
        except BuildError as err:
            raise RlaifError(f"building {tag} failed: {err.msg}; see the recipe in {recipe}") from None
    client.images.get(tag).tag(BASE, "latest")
    return tag


def _import_rootfs(spec_file: Path, tag: str, mirror: str, log: Callable[[str], None]) -> None:
    spec = _read_rootfs_spec(spec_file)
    if shutil.which("debootstrap") is None:
        raise RlaifError("debootstrap is not installed; `apt-get install debootstrap` (Debian/Ubuntu) and retry")
    if os.geteuid() != 0:
        raise RlaifError("building the base image runs debootstrap, which needs root; run it as root")
    with tempfile.TemporaryDirectory(prefix="rlaif-rootfs-") as tmp:
        root, tarball = Path(tmp) / "root", Path(tmp) / "rootfs.tar"
        log(f"debootstrap {spec['suite']} from {mirror} (about a minute)")
        cmd = ["debootstrap", f"--variant={spec['variant']}", f"--include={','.join(spec['include'])}"]
        done = subprocess.run([*cmd, spec["suite"], str(root), mirror], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RlaifError(f"debootstrap failed ({tail[0]}); check that {mirror} is reachable")
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repo, _, version = tag.partition(":")
        docker_client().api.import_image_from_file(str(tarball), repository=repo, tag=version)
        log(f"imported {tag}")


def _read_rootfs_spec(path: Path) -> dict:
    spec: dict = {"suite": "bookworm", "variant": "minbase", "include": []}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "include":
            spec["include"] = value.split()
        elif key in spec:
            spec[key] = value.strip()
    return spec


def apt_mirror() -> str:
    """The Debian mirror apt on this machine already uses, so image builds go where apt goes."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in sources:
        if path.is_file():
            text = path.read_text()
            match = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^]]*]\s+)?(\S+)", text, re.M)
            if match and "security" not in match.group(1):
                return match.group(1)
    return DEFAULT_MIRROR
