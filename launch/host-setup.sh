#!/usr/bin/env bash
# Makes this host ready for rlaif's sandboxes; idempotent.
# - the Debian tools image builds and the local sandbox backend use: debootstrap, bubblewrap, and the system
#   python's pytest (the local backend grades with the host's /usr/bin/python3);
# - chromium, the headless browser tests/test_report_html.py drives;
# - a Docker engine that answers. As root on Debian/Ubuntu it installs docker.io when dockerd is missing and
#   starts dockerd with no bridge network (containers run with --network none; nothing here needs one).
# Without root it only checks, and says what to install.
set -euo pipefail

engine_up() { timeout 10 docker info >/dev/null 2>&1; }
missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
/usr/bin/python3 -c "import pytest" >/dev/null 2>&1 || missing+=(python3-pytest)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v dockerd >/dev/null 2>&1 || engine_up || missing+=(docker.io)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]}; install them with your package manager (as root on Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "host: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if engine_up; then
  echo "host: docker engine answers"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: no Docker engine answers and this is not root; start dockerd (or ask an admin), or set sandbox.backend=local" >&2
  exit 1
fi
echo "host: starting dockerd (--bridge=none)"
# setsid: the engine must outlive the make/CI process group that started it.
setsid dockerd --bridge=none --iptables=false >/var/log/rlaif-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if engine_up; then echo "host: docker engine answers"; exit 0; fi
  sleep 1
done
echo "error: dockerd did not answer within 60 s; see /var/log/rlaif-dockerd.log" >&2
exit 1
