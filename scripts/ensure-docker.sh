#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io when dockerd is missing (as root),
# start dockerd when none runs. Never starts a second daemon beside a running one.
#
# The socket file alone proves nothing: a daemon killed with its session leaves /var/run/docker.sock
# behind, and waiting on that stale file is how CI once timed out. So we ask the engine, and look for
# the process.
set -euo pipefail
SOCK=/var/run/docker.sock
LOG=/tmp/fn-core-dockerd.log
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
engine_answers() { timeout 5 docker version >/dev/null 2>&1; }

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
if engine_answers; then exit 0; fi

if pgrep -x dockerd >/dev/null 2>&1; then
    echo "ensure-docker: dockerd runs but does not answer yet; waiting for it" >&2
else
    # No daemon: whatever it left behind (socket, pid file) is stale. dockerd refuses a pid file whose
    # number a live process now carries, so clear both before starting it.
    as_root rm -f "$SOCK" /var/run/docker.pid
    echo "ensure-docker: starting dockerd (log: $LOG)" >&2
    as_root sh -c "nohup dockerd >$LOG 2>&1 &"
fi
for _ in $(seq 1 240); do
    if engine_answers; then exit 0; fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        echo "ensure-docker: dockerd exited; the end of $LOG:" >&2
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "ensure-docker: the Docker engine did not answer within 120 s; the end of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
