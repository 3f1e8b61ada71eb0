#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine; idempotent.
# As root on Debian/Ubuntu it installs docker.io when dockerd is missing and starts dockerd with no
# bridge network (containers run with --network none; nothing here needs one). Otherwise it says what to do.
set -euo pipefail

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

if engine_up; then
  echo "docker: engine answers"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: no Docker engine answers and this is not root; install Docker (docs.docker.com/engine/install) and start it, or use sandbox.backend=local" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: dockerd is not installed and apt-get is missing; install a Docker engine for this OS and start it" >&2
    exit 1
  fi
  echo "docker: installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
echo "docker: starting dockerd (--bridge=none)"
# setsid: the engine must outlive the make/CI process group that started it.
setsid dockerd --bridge=none --iptables=false >/var/log/rlaif-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if engine_up; then echo "docker: engine answers"; exit 0; fi
  sleep 1
done
echo "error: dockerd did not answer within 60 s; see /var/log/rlaif-dockerd.log" >&2
exit 1
