#!/usr/bin/env bash
# What the tests' Go tools are built from (tests/system/go_tools.py), installed when missing: Debian's Go, grpc-go,
# golang/protobuf 1.3 (whose protoc-gen-go made Fn's runner.pb.go) and protoc for the stand-ins of Fn's LB and pure
# runner; Prometheus's client_golang for promlint (what `promtool check metrics` runs).
set -euo pipefail
source "$(dirname "$0")/debian.sh"
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f /usr/share/gocode/src/google.golang.org/grpc/server.go ] || need+=(golang-google-grpc-dev)
# (grpc/grpc.go: only 1.3's protoc-gen-go has the plugins=grpc that Fn's runner.pb.go was made with; 1.5's conflicts)
[ -f /usr/share/gocode/src/github.com/golang/protobuf/protoc-gen-go/grpc/grpc.go ] || need+=(golang-github-golang-protobuf-1-3-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/empty.proto ] || need+=(libprotobuf-dev)
[ -d /usr/share/gocode/src/github.com/prometheus/client_golang/prometheus/testutil/promlint ] || need+=(golang-github-prometheus-client-golang-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "ensure-go-tools: installing Debian's ${need[*]}" >&2
    apt_install "${need[@]}"
fi
