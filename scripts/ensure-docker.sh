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
source "$(dirname "$0")/debian.sh"
engine_answers() { timeout 5 docker version >/dev/null 2>&1; }
# reads `ps -o stat=` lines: true if one is a live process, not the zombie a SIGKILLed one leaves until reaped
any_live() { grep -qv '^Z'; }
dockerd_alive() { ps -C dockerd -o stat= 2>/dev/null | any_live; }

if ! command -v dockerd >/dev/null 2>&1; then
    echo "ensure-docker: dockerd missing, installing Debian's docker.io" >&2
    apt_install docker.io
fi
if [ ! -x /usr/bin/python3.11 ]; then
    # The fdk base image is built from the host's Debian Python 3.11.
    apt_install python3.11
fi
# The venvs of `make demo`/`make test` need ensurepip (python3-venv) and the demo needs curl; a minimal
# Debian has neither.
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "ensure-docker: python3 cannot make venvs, installing Debian's python3-venv" >&2
    apt_install python3-venv
fi
if ! command -v curl >/dev/null 2>&1; then
    apt_install curl
fi
if engine_answers; then exit 0; fi
if [ "$(id -u)" != 0 ] && [ -S "$SOCK" ] && [ ! -w "$SOCK" ] && dockerd_alive; then
    # the engine runs, but this user may not use it: waiting would not help
    echo "ensure-docker: $USER may not use $SOCK: add $USER to the docker group (sudo usermod -aG docker $USER), log in again" >&2
    exit 1
fi

# A pid file whose process is gone or a zombie (this machine's init may not reap at once): a daemon
# that finds it takes the process for alive, e.g. dockerd then waits for its managed containerd's
# socket and gives up ("timeout waiting for containerd to start").
clear_stale_pid_file() {
    local file=$1 pid
    pid=$(cat "$file" 2>/dev/null) || return 0
    if ! ps -p "$pid" -o stat= 2>/dev/null | any_live; then as_root rm -f "$file"; fi
}
start_dockerd() {
    as_root rm -f "$SOCK"  # no daemon: the socket is a dead one's
    clear_stale_pid_file /var/run/docker.pid
    clear_stale_pid_file /var/run/docker/containerd/containerd.pid
    echo "ensure-docker: starting dockerd (log: $LOG)" >&2
    as_root sh -c "nohup dockerd >$LOG 2>&1 &"
}

if dockerd_alive; then
    echo "ensure-docker: dockerd runs but does not answer yet; waiting for it" >&2
else
    start_dockerd
fi
starts=1
for _ in $(seq 1 240); do
    if engine_answers; then exit 0; fi
    if ! dockerd_alive; then
        if [ $starts -lt 3 ]; then  # e.g. a zombie containerd was reaped meanwhile: its pid file is stale now
            echo "ensure-docker: dockerd exited (log: $LOG); starting it again" >&2
            starts=$((starts + 1))
            sleep 2
            start_dockerd
        else
            echo "ensure-docker: dockerd exited $starts times; the end of $LOG:" >&2
            tail -n 30 "$LOG" >&2 || true
            exit 1
        fi
    fi
    sleep 0.5
done
echo "ensure-docker: the Docker engine did not answer within 120 s; the end of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
