"""Sandbox images built without a registry: a debootstrap root filesystem, then Dockerfile layers.

Tags are content-addressed (`rlaif/base:<hash of the recipe>`), so an unchanged recipe is never
rebuilt; `rlaif/base:latest` points at the newest build. The hash covers the recipe files, not the
packages the mirror serves on the day of the build.

No package host is written here: debootstrap fetches from the mirror the user names (`--mirror`,
`RLAIF_APT_MIRROR`), else from the Debian archive the host's own apt sources already use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from docker.errors import BuildError, ImageNotFound

from rlaif.errors import RlaifError
from rlaif.sandbox.engine import docker_client

RECIPES = Path(__file__).parent / "recipes"
BASE = "rlaif/base"
DEFAULT_IMAGE = f"{BASE}:latest"
"""The image environments name unless they choose their own (`Environment.image`); sandbox.image replaces it."""
MIRROR_ENV = "RLAIF_APT_MIRROR"
# Suites that name a Debian release (codenames from buster on, and their aliases); `-security`, `-updates`,
# other distributions' suites (an Ubuntu `jammy`) and third-party repositories' (`nodistro`) are not one.
DEBIAN_RELEASES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
})
MIRROR_SCHEMES = ("http", "https", "file")


def recipe_hash(recipe: Path) -> str:
    """Twelve hex digits of the sha256 of every file in a recipe folder, names included."""
    digest = hashlib.sha256()
    for path in sorted(p for p in recipe.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(recipe)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def resolve_image(image: str, configured: str) -> str:
    """The image a sandbox starts from: `configured` (`sandbox.image`) stands in for `DEFAULT_IMAGE`."""
    return configured if image == DEFAULT_IMAGE else image


def missing_image_fix(tag: str) -> str:
    """How to get `tag` into the Docker engine: build the base image, or build or tag another."""
    if tag.startswith(f"{BASE}:"):
        return "build it with `rlaif sandbox build`"
    return f"build it (`docker build -t {tag} ...` FROM {DEFAULT_IMAGE}) or tag one as it (`docker tag IMAGE {tag}`)"


def image_exists(tag: str) -> bool:
    try:
        docker_client().images.get(tag)
    except ImageNotFound:
        return False
    return True


def build_base_image(log: Callable[[str], None] = print, mirror: str | None = None) -> str:
    """Build (or find) the base image; returns its content-addressed tag.

    `mirror` (see `resolve_mirror`) is looked up only when the root filesystem has to be debootstrapped.
    """
    recipe = RECIPES / "base"
    digest = recipe_hash(recipe)
    tag = f"{BASE}:{digest}"
    client = docker_client()
    if image_exists(tag):
        log(f"image {tag} is up to date")
    else:
        rootfs = f"rlaif/rootfs:{digest}"
        if not image_exists(rootfs):
            _import_rootfs(recipe / "rootfs.txt", rootfs, resolve_mirror(mirror), log)
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


def resolve_mirror(mirror: str | None = None, etc_apt: Path = Path("/etc/apt")) -> str:
    """The mirror debootstrap uses: `mirror`, else $RLAIF_APT_MIRROR, else the host's apt sources' Debian one."""
    found = mirror or os.environ.get(MIRROR_ENV) or debian_mirror(host_apt_sources(etc_apt))
    if not found:
        raise RlaifError(
            f"no apt mirror for debootstrap: the host's apt sources name none; pass --mirror URL (or set {MIRROR_ENV})"
        )
    return found


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[tuple[Path, str]]:
    """apt's source files with their text, in the order apt reads them: sources.list, then sources.list.d/."""
    parts = etc_apt / "sources.list.d"
    paths = [etc_apt / "sources.list"]
    if parts.is_dir():
        paths += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [(path, path.read_text()) for path in paths if path.is_file()]


def debian_mirror(sources: Iterable[tuple[Path, str]]) -> str | None:
    """The first `deb` URI (http, https or file) whose suite is a Debian release, or None.

    `sources` are (path, text) pairs; a `.sources` path is read as deb822 stanzas, any other as one-line
    `deb [options] URI suite components` entries.
    """
    for path, text in sources:
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uris, suites in entries:
            if DEBIAN_RELEASES.intersection(suites):
                usable = [uri for uri in uris if urlsplit(uri).scheme in MIRROR_SCHEMES]
                if usable:
                    return usable[0]
    return None


def _one_line_entries(text: str) -> list[tuple[list[str], list[str]]]:
    """([URI], [suite]) of every `deb` line; `deb-src` lines, comments and `[options]` are skipped."""
    entries = []
    for line in text.splitlines():
        words = line.partition("#")[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            # Options may hold spaces (`[ arch=amd64 signed-by=/k.gpg ]`): skip to the word closing them.
            end = next((i for i, word in enumerate(words) if word.endswith("]")), len(words))
            words = words[end + 1:]
        if len(words) >= 2:
            entries.append(([words[0]], [words[1]]))
    return entries


def _deb822_entries(text: str) -> list[tuple[list[str], list[str]]]:
    """(URIs, Suites) of every enabled deb822 stanza whose Types include `deb`."""
    entries = []
    for stanza in _deb822_stanzas(text):
        if "deb" in stanza.get("types", "").split() and stanza.get("enabled", "yes").lower() != "no":
            entries.append((stanza.get("uris", "").split(), stanza.get("suites", "").split()))
    return entries


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    """Stanzas as {lower-cased field: value}; blank lines separate them, `#` lines are comments, and a line
    starting with whitespace continues the field above it."""
    stanzas: list[dict[str, str]] = [{}]
    field = ""
    for line in text.splitlines():
        if not line.strip():
            stanzas.append({})
            field = ""
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            if field:
                stanzas[-1][field] += " " + line.strip()
        else:
            name, _, value = line.partition(":")
            field = name.strip().lower()
            stanzas[-1][field] = value.strip()
    return [stanza for stanza in stanzas if stanza]
