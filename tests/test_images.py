"""Where debootstrap's mirror comes from: an explicit option, $RLAIF_APT_MIRROR, else the host's apt sources."""

from pathlib import Path

import pytest

from rlaif.errors import RlaifError
from rlaif.sandbox.images import MIRROR_ENV, debian_mirror, host_apt_sources, resolve_mirror

pytestmark = pytest.mark.unit

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://apt.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://apt.example/debian-security
Suites: bookworm-security
Components: main
"""
SECURITY_ONLY = """\
Types: deb
URIs: http://apt.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://apt.example/debian
Suites: bookworm-updates
Components: main
"""


@pytest.mark.parametrize(
    ("files", "mirror"),
    [
        pytest.param({"sources.list": "deb http://apt.example/debian bookworm main\n"},
                     "http://apt.example/debian", id="one-line"),
        pytest.param({"sources.list.d/debian.sources": DEB822}, "http://apt.example/debian", id="deb822"),
        pytest.param({"sources.list": (
            "# deb http://old.example/debian bookworm main\n"
            "\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb http://apt.example/debian-security bookworm-security main  # security first\n"
            "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://apt.example/debian bookworm main\n"
        )}, "https://apt.example/debian", id="comments-deb-src-security-and-options"),
        pytest.param({"sources.list": "deb [ arch=amd64 trusted=yes ] file:///srv/debian trixie main\n"},
                     "file:///srv/debian", id="spaced-options-and-a-file-uri"),
        pytest.param({"sources.list.d/debian.sources": (
            "Types: deb deb-src\n"
            "URIs: cdrom:[Debian 12]/\n"
            "  http://apt.example/debian\n"
            "Suites: stable\n"
        )}, "http://apt.example/debian", id="deb822-continuation-lines-and-an-unusable-scheme"),
        pytest.param({"sources.list.d/debian.sources": (
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
            "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://apt.example/debian\nSuites: bookworm\n"
        )}, "http://apt.example/debian", id="deb822-disabled-and-deb-src-stanzas"),
        pytest.param({
            "sources.list.d/a-node.sources": "Types: deb\nURIs: https://node.example/node_20.x\nSuites: nodistro\n",
            "sources.list.d/b-sdk.list": "deb https://sdk.example/apt cloud-sdk-bookworm main\n",
            "sources.list.d/c-ubuntu.list": "deb http://ubuntu.example/ubuntu jammy main\n",
            "sources.list.d/d-debian.list": "deb http://apt.example/debian bookworm main\n",
        }, "http://apt.example/debian", id="third-party-and-other-distributions-skipped"),
        pytest.param({
            "sources.list": "deb http://first.example/debian bookworm main\n",
            "sources.list.d/debian.sources": DEB822,
        }, "http://first.example/debian", id="sources-list-is-read-first"),
        pytest.param({"sources.list.d/debian.sources.disabled": DEB822}, None, id="other-suffixes-ignored"),
        pytest.param({"sources.list.d/debian.sources": SECURITY_ONLY}, None, id="security-and-updates-only"),
        pytest.param({}, None, id="no-sources"),
    ],
)
def test_debian_mirror_from_apt_sources(tmp_path, files, mirror):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert debian_mirror(host_apt_sources(tmp_path)) == mirror


def test_debian_mirror_is_pure_on_path_text_pairs():
    assert debian_mirror([(Path("x.sources"), DEB822)]) == "http://apt.example/debian"
    assert debian_mirror([(Path("x.list"), DEB822)]) is None  # a .list file is read as one-line entries


def test_an_explicit_mirror_beats_the_environment_which_beats_the_host(tmp_path, monkeypatch):
    (tmp_path / "sources.list").write_text("deb http://host.example/debian bookworm main\n")
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert resolve_mirror(None, tmp_path) == "http://host.example/debian"
    monkeypatch.setenv(MIRROR_ENV, "http://env.example/debian")
    assert resolve_mirror(None, tmp_path) == "http://env.example/debian"
    assert resolve_mirror("file:///srv/debian", tmp_path) == "file:///srv/debian"


def test_a_host_without_a_debian_source_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(RlaifError) as info:
        resolve_mirror(None, tmp_path)
    assert str(info.value) == (
        "no apt mirror for debootstrap: the host's apt sources name none; pass --mirror URL (or set RLAIF_APT_MIRROR)"
    )
