#!/usr/bin/env bash
# `make bench`: the benchmark suite from a fresh machine. Ensures the Docker engine, a venv
# (.venv-bench: fn-core, the contrib bounded placer, matplotlib), wrk (Debian, when root), then runs
# bench/run.py, which builds the echo image, starts and stops every process it measures on 127.0.0.1
# and writes bench/results/<UTC date>/{report.json,*.png,README.md}.
# Arguments are passed on: `bash scripts/bench.sh --quick`, `--only warm,cold`, `--help`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-docker.sh
source scripts/debian.sh

if ! command -v wrk >/dev/null 2>&1; then
    # Without wrk the suite falls back to its asyncio client (whose own cost it measures and reports).
    apt_install wrk 2>/dev/null || echo "bench: wrk unavailable; using the asyncio load generator" >&2
fi

# The interpreter: FN_BENCH_PYTHON, else the system's python3 (>= 3.11). Distributions build theirs with PGO and LTO,
# as the python images do; a pyenv build without --enable-optimizations runs the nodes' Python ~12 % slower a
# call, which a benchmark would report as fn-core's (bench/README.md, "The interpreter").
PY=${FN_BENCH_PYTHON:-}
if [ -z "$PY" ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=/usr/bin/python3
    # Debian's python3 makes venvs with pip only with python3-venv
    /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv 2>/dev/null || PY=""
fi
PY=${PY:-python3}
VENV=.venv-bench
STAMP=$VENV/.installed
if [ -x $VENV/bin/python ] && [ "$($VENV/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))')" != "$($PY -c 'import os, sys; print(os.path.realpath(sys.executable))')" ]; then
    rm -rf $VENV  # made on another interpreter: the figures would be that one's
fi
if [ ! -x $VENV/bin/pip ]; then  # pip, not python: a venv made without ensurepip has no pip
    $PY -m venv $VENV
    $VENV/bin/pip install -q --disable-pip-version-check matplotlib
fi
# Reinstall fn-core whenever its sources changed since the last install (the suite measures this tree).
if [ ! -f $STAMP ] || [ -n "$(find fn_core fn_plugins_builtin contrib/fn-placer-bounded pyproject.toml setup.cfg \
        -newer $STAMP -type f -not -path '*/__pycache__/*' -not -path '*/build/*' -print -quit)" ]; then
    $VENV/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps . ./contrib/fn-placer-bounded
    $VENV/bin/pip install -q --disable-pip-version-check . ./contrib/fn-placer-bounded
    touch $STAMP
fi
exec $VENV/bin/python bench/run.py "$@"
