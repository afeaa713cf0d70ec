#!/usr/bin/env bash
# The main job on a fresh machine: start fn-core on its embedded defaults (`fn-core serve`),
# deploy the example function through the v2 API, invoke it, stop the platform.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-docker.sh
VENV=.venv-demo
STAMP=$VENV/.installed
[ -x $VENV/bin/pip ] || python3 -m venv $VENV  # pip, not python: a venv made without ensurepip has no pip
# Reinstall fn-core whenever its sources changed since the last install: the demo runs this tree.
if [ ! -f $STAMP ] || [ -n "$(find fn_core fn_plugins_builtin pyproject.toml setup.cfg \
        -newer $STAMP -type f -not -path '*/__pycache__/*' -not -path '*/build/*' -print -quit)" ]; then
    $VENV/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps .
    $VENV/bin/pip install -q --disable-pip-version-check .
    touch $STAMP
fi
FN="$VENV/bin/fn-core"
PORT=${FN_PORT:-8080}
API="http://127.0.0.1:$PORT"
DATA=$(mktemp -d /tmp/fn-core-demo-XXXX)

echo "== building the example function image (examples/echo/func.py, no registry needed)"
$FN build-image examples/echo -t fn-core-example/echo:1

echo "== starting fn-core serve on $API"
# a tag per port (or yours): a runner removes at start what its tag's earlier runners left, a live one's too, so
# two demos on one engine (FN_PORT=9000 make demo beside another) must not share one
FN_CONTAINER_LABEL_TAG=${FN_CONTAINER_LABEL_TAG:-fn-core-demo-$PORT} $FN serve --host 127.0.0.1 --port "$PORT" \
    --db "sqlite3://$DATA/fn.db" >"$DATA/serve.log" 2>&1 &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null || true; wait $SERVE 2>/dev/null || true; rm -rf "$DATA"' EXIT
# up when our serve says it listens and /version answers: another server on the port (another fn-core too,
# whose store the demo must not write to) makes ours stop with "address in use", said below with its log
up=""
for _ in $(seq 1 100); do
    kill -0 $SERVE 2>/dev/null || break
    if grep -q "listening on" "$DATA/serve.log" && curl -sf "$API/version" 2>/dev/null | grep -q '"version"'; then up=1; break; fi
    sleep 0.1
done
if [ -z "$up" ]; then
    echo "== fn-core serve did not come up on $API; its log:" >&2
    cat "$DATA/serve.log" >&2
    exit 1
fi

json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
APP=$(curl -sf -X POST "$API/v2/apps" -H 'Content-Type: application/json' -d '{"name":"demo"}' | json id)
FNID=$(curl -sf -X POST "$API/v2/fns" -H 'Content-Type: application/json' \
    -d "{\"name\":\"echo\",\"app_id\":\"$APP\",\"image\":\"fn-core-example/echo:1\"}" | json id)
curl -sf -X POST "$API/v2/triggers" -H 'Content-Type: application/json' \
    -d "{\"name\":\"echo\",\"app_id\":\"$APP\",\"fn_id\":\"$FNID\",\"type\":\"http\",\"source\":\"/echo\"}" >/dev/null
echo "== deployed app $APP, fn $FNID, trigger /t/demo/echo"

echo "== POST /invoke/$FNID (cold: starts the container)"
curl -s -i -X POST "$API/invoke/$FNID" -d 'Hello from fn-core'; echo
echo "== POST /t/demo/echo (warm: reuses it)"
curl -s -i -X POST "$API/t/demo/echo" -d 'Hello again'; echo
echo "== the platform's log"
tail -n 5 "$DATA/serve.log"
