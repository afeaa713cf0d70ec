"""Go programs the tests check our nodes against, built from Debian's Go packages (`go/`).

Fn's side of the wire, on grpc-go: `fnlb` drives a runner as Fn's LB does, `fnrunner` answers as Fn's pure
runner. Fn's LB and runner are Go programs on grpc-go; ours speak gRPC through `fn_core.transport`, which the
other tests pit against grpcio (C core). grpc-go is stricter in places (it resets a stream whose header block
puts a pseudo-header after a regular field, which grpcio lets pass), so these stand-ins are built from
Debian's grpc-go and the Go code that Fn's own `protoc-gen-go` (golang/protobuf 1.3, ``plugins=grpc``) makes
from our `proto/runner.proto`.

`promlint`: what `promtool check metrics` says of a `/metrics` text, from Prometheus's own parser and linter.

`scripts/ensure-go-tools.sh` installs the packages (the test command runs it); without them the tests that use
these fail, saying what to install.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import types
from pathlib import Path
from subprocess import PIPE
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCES = Path(__file__).resolve().parent / "go"
DEBIAN_GOPATH = Path("/usr/share/gocode")
PACKAGES = ("golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-3-dev protobuf-compiler libprotobuf-dev "
            "golang-github-prometheus-client-golang-dev")
#: the well-known types as golang/protobuf 1.3 names them, as Fn's generated code imports them
WELL_KNOWN = ",".join(f"Mgoogle/protobuf/{name}.proto=github.com/golang/protobuf/ptypes/{name}" for name in ("empty", "struct"))


def missing() -> list[str]:
    needs = {"go": shutil.which("go"), "protoc": shutil.which("protoc"),
             "grpc-go": (DEBIAN_GOPATH / "src/google.golang.org/grpc/server.go").is_file(),
             "protoc-gen-go 1.3": (DEBIAN_GOPATH / "src/github.com/golang/protobuf/protoc-gen-go/grpc/grpc.go").is_file(),
             "google/protobuf/empty.proto": Path("/usr/include/google/protobuf/empty.proto").is_file(),
             "promlint": (DEBIAN_GOPATH / "src/github.com/prometheus/client_golang/prometheus/testutil/promlint").is_dir()}
    return [name for name, found in needs.items() if not found]


def build(out: Path) -> types.SimpleNamespace:
    """Build ``fnlb``, ``fnrunner`` and ``promlint`` into ``out``; their paths. Go's build cache is kept between runs."""
    lacking = missing()
    if lacking:
        raise AssertionError(f"the Go test tools cannot be built: no {', '.join(lacking)}; install Debian's {PACKAGES} "
                             "(bash scripts/ensure-go-tools.sh)")
    gopath = out / "gopath"
    generated = gopath / "src" / "runnerpb"
    generated.mkdir(parents=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{DEBIAN_GOPATH}", "GOFLAGS": "",
           "GOCACHE": os.environ.get("GOCACHE") or str(Path.home() / ".cache" / "fn-core-tests-go")}

    def run(*args: str | Path) -> None:
        done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise AssertionError(f"{' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")

    plugin = out / "protoc-gen-go"
    run("go", "build", "-o", plugin, "github.com/golang/protobuf/protoc-gen-go")
    run("protoc", f"--plugin=protoc-gen-go={plugin}", "-I", ROOT / "proto", "-I", "/usr/include",
        f"--go_out=plugins=grpc,{WELL_KNOWN}:{generated}", ROOT / "proto" / "runner.proto")
    peers = {}
    for name in ("fnlb", "fnrunner", "promlint"):
        peers[name] = out / name
        run("go", "build", "-o", peers[name], SOURCES / name / "main.go")
    return types.SimpleNamespace(**peers)


async def drive(fnlb: Path, address: str, calls: list[dict[str, Any]], concurrency: int = 1, status: bool = False,
                tls: dict[str, str] | None = None, timeout_s: float = 180) -> dict[str, Any]:
    """Run ``calls`` through ``fnlb`` against the runner at ``address`` (the plan's format is in fnlb/main.go);
    ``tls``: mTLS with the `pki` fixture's files."""
    plan: dict[str, Any] = {"addr": address, "concurrency": concurrency, "calls": calls, "status": status}
    if tls is not None:
        plan["tls"] = {"cert": tls["node_cert"], "key": tls["node_cert_key"], "ca": tls["node_cert_authority"]}
    proc = await asyncio.create_subprocess_exec(str(fnlb), stdin=PIPE, stdout=PIPE, stderr=PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(json.dumps(plan).encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode:
        raise AssertionError(f"fnlb exited {proc.returncode}: {err.decode(errors='replace')}")
    return json.loads(out)
