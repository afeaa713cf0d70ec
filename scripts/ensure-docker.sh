#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io when dockerd is missing (as root),
# start dockerd when its socket is missing. Never starts a second daemon beside a running one.
set -euo pipefail
SOCK=/var/run/docker.sock
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

if ! command -v dockerd >/dev/null 2>&1; then
    echo "ensure-docker: dockerd missing, installing Debian's docker.io" >&2
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q docker.io >/dev/null 2>&1 || {
        as_root apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q docker.io >/dev/null
    }
fi
if [ ! -x /usr/bin/python3.11 ]; then
    # The fdk base image is built from the host's Debian Python 3.11.
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q python3.11 >/dev/null
fi
if [ ! -S "$SOCK" ]; then
    if pgrep -x dockerd >/dev/null 2>&1; then
        echo "ensure-docker: dockerd runs but $SOCK is missing; waiting for it" >&2
    else
        echo "ensure-docker: starting dockerd (log: /tmp/fn-core-dockerd.log)" >&2
        as_root sh -c 'nohup dockerd >/tmp/fn-core-dockerd.log 2>&1 &'
    fi
fi
for _ in $(seq 1 120); do
    if docker version >/dev/null 2>&1; then exit 0; fi
    sleep 0.5
done
echo "ensure-docker: the Docker engine did not answer within 60 s; see /tmp/fn-core-dockerd.log" >&2
exit 1
