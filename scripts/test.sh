#!/usr/bin/env bash
# The test command (README, CI): sets up everything it needs, then runs tox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-docker.sh
bash scripts/ensure-go-tools.sh
bash scripts/ensure-node.sh
if [ ! -x .venv-tox/bin/tox ]; then
    python3 -m venv .venv-tox
    .venv-tox/bin/pip install -q --disable-pip-version-check 'tox>=4.11'
fi
# The test env runs last so that pytest's summary is the closing report.
exec .venv-tox/bin/tox run -e lint,type,proto,contrib,py311 "$@"
