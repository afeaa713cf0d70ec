#!/usr/bin/env bash
# What the tests' stand-ins for Fn's LB and pure runner are built from (tests/system/grpc_go.py): Debian's Go,
# grpc-go, golang/protobuf 1.3 (whose protoc-gen-go made Fn's runner.pb.go) and protoc. Installed when missing.
set -euo pipefail
source "$(dirname "$0")/debian.sh"
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f /usr/share/gocode/src/google.golang.org/grpc/server.go ] || need+=(golang-google-grpc-dev)
[ -f /usr/share/gocode/src/github.com/golang/protobuf/protoc-gen-go/main.go ] || need+=(golang-github-golang-protobuf-1-3-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/empty.proto ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "ensure-grpc-go: installing Debian's ${need[*]}" >&2
    apt_install "${need[@]}"
fi
