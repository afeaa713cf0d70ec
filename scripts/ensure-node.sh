#!/usr/bin/env bash
# What the Node FDK test's function image is built from (tests/system/node_fdk.py): the host's `node`, installed from
# Debian's nodejs when missing. The FDK itself comes from npm's registry at build time; npm is not needed.
set -euo pipefail
source "$(dirname "$0")/debian.sh"
if ! command -v node >/dev/null 2>&1; then
    echo "ensure-node: installing Debian's nodejs" >&2
    apt_install nodejs
fi
