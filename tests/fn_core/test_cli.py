"""The `fn-core` command as a user runs it: the installed console script, in a subprocess."""

import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fn_core import __version__
from fn_core.runner.iofs import SocketDirs
from fn_core.testing import free_port


def fn_core_command():
    script = Path(sys.executable).parent / "fn-core"
    found = str(script) if script.exists() else shutil.which("fn-core")
    assert found, "the fn-core console script is not installed next to this Python"
    return found


def run(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    full_env.update(env or {})
    return subprocess.run([fn_core_command(), *args], capture_output=True, text=True, env=full_env, timeout=60)


def test_plugins_json_lists_builtin_placers_and_driver_with_their_hooks():
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {p["name"]: p for p in report["plugins"]}
    assert by_name["placer-ch"]["provides"] == ["placer: ch"]
    assert by_name["placer-naive"]["provides"] == ["placer: naive"]
    assert by_name["driver-docker"]["provides"] == ["driver: docker"]
    assert by_name["pool-static"]["provides"] == ["runner-pool: static"]
    assert (report["placer"], report["driver"], report["runner_pool"]) == ("ch", "docker", "static")
    assert "place_call" in by_name["placer-ch"]["hooks"]
    assert by_name["placer-ch"]["distribution"] == "fn-core" and by_name["placer-ch"]["version"] == __version__


def test_plugins_table_is_readable():
    result = run("plugins")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES", "HOOKS"]


@pytest.mark.parametrize("how", [("--placer", "nope"), ("FN_PLACER", "nope")])
def test_lb_with_an_unknown_placer_stops_and_names_the_available_ones(how):
    args, env = (["lb", "--host", "127.0.0.1", how[0], how[1]], None) if how[0].startswith("--") else (["lb", "--host", "127.0.0.1"], {how[0]: how[1]})
    result = run(*args, env=env)
    assert result.returncode == 2
    assert "unknown placer 'nope'" in result.stderr
    available = result.stderr.split("available placers: ")[1].split(" (")[0].split(", ")
    assert {"ch", "naive"} <= set(available)  # installed contrib placers may be listed too


def test_lb_with_an_unknown_runner_pool_stops_and_names_the_available_ones():
    result = run("lb", "--host", "127.0.0.1", "--runner-pool", "consul")
    assert result.returncode == 2
    assert "unknown runner pool 'consul'; available runner pools: " in result.stderr
    assert "static" in result.stderr.split("available runner pools: ")[1].split(" (")[0].split(", ")


def test_a_node_that_cannot_start_says_why_in_its_log_destination_too(tmp_path):
    log_file = tmp_path / "node.log"
    env = {"FN_LOG_DEST": f"file://{log_file}", "FN_LOG_FORMAT": "json"}
    result = run("lb", "--host", "127.0.0.1", "--port", str(free_port()), "--db", f"sqlite3://{tmp_path}/fn.db", env=env)
    assert_one_error_line(result, "runner pool 'static' lists no runners")  # stderr as ever
    *_, last = [json.loads(line) for line in log_file.read_text().splitlines()]  # the log ended with why, not its start
    assert last["level"] == "error" and last["msg"].startswith("error: runner pool 'static' lists no runners"), last


#: an address nothing listens on: these LBs are about logs and routes, never about a placed call
NO_RUNNER = "127.0.0.1:9"


def test_an_lb_whose_static_pool_names_no_runner_does_not_start(tmp_path):
    result = run("lb", "--host", "127.0.0.1", "--port", str(free_port()), "--db", f"sqlite3://{tmp_path}/fn.db")
    assert result.returncode == 2
    assert "runner pool 'static' lists no runners and is read only at start" in result.stderr
    assert "FN_RUNNER_ADDRESSES" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_value_is_one_clear_line():
    result = run("runner", "--grpc-port", "99999")
    assert result.returncode == 2
    assert result.stderr.strip() == "fn-core: error: grpc_port (from the command line) must be a TCP port in 0..65535 (0 = any free port), got 99999"


def test_version():
    result = run("version")
    assert result.returncode == 0 and result.stdout.strip() == __version__


def http(method, url, body=None):
    """(status, JSON body) of one request to a server process; raises OSError while it is not listening."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def wait_up(url):
    for _ in range(200):  # bounded: 20 s
        try:
            return http("GET", url)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@contextlib.contextmanager
def running_node(args: list[str], env: dict[str, str], port: int):
    """`fn-core <args>` running until the block ends (entered once its /version answers on ``port``), then stopped
    with SIGTERM: the record yielded gets its exit code and stderr then."""
    node = subprocess.Popen([fn_core_command(), *args], env=env, stderr=subprocess.PIPE, text=True)
    stopped = types.SimpleNamespace(returncode=None, stderr="")
    try:
        wait_up(f"http://127.0.0.1:{port}/version")
        yield stopped
    finally:
        node.send_signal(signal.SIGTERM)
        _, stopped.stderr = node.communicate(timeout=30)
        stopped.returncode = node.returncode


def test_an_api_node_and_an_lb_reading_from_it_as_processes(tmp_path):
    """`fn-core api` owns the apps; `fn-core lb --runner-api-url` finds them there; both stop cleanly on SIGTERM."""

    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    api_port, lb_port = free_port(), free_port()
    api = subprocess.Popen([fn_core_command(), "api", "--host", "127.0.0.1", "--port", str(api_port), "--db", f"sqlite3://{tmp_path}/fn.db"],
                           env=env, stderr=subprocess.PIPE, text=True)
    lb = subprocess.Popen([fn_core_command(), "lb", "--host", "127.0.0.1", "--port", str(lb_port), "--runner", NO_RUNNER, "--runner-api-url", f"http://127.0.0.1:{api_port}"],
                          env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(f"http://127.0.0.1:{api_port}/version")
        wait_up(f"http://127.0.0.1:{lb_port}/version")
        status, app = http("POST", f"http://127.0.0.1:{api_port}/v2/apps", {"name": "shop"})
        assert status == 200, app
        assert http("GET", f"http://127.0.0.1:{lb_port}/t/shop/nothing-here") == (404, {"message": "Trigger not found"})
        assert http("GET", f"http://127.0.0.1:{lb_port}/t/elsewhere/x") == (404, {"message": "App not found"})
        assert http("GET", f"http://127.0.0.1:{lb_port}/v2/apps") == (404, {"message": "Path not found"})
        assert http("POST", f"http://127.0.0.1:{api_port}/invoke/{app['id']}")[0] == 404
    finally:
        for proc in (lb, api):
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30)[1] for proc in (lb, api)]
    assert (lb.returncode, api.returncode) == (0, 0), outputs
    assert f"apps and fns from the API node http://127.0.0.1:{api_port}" in outputs[0]
    # each node says when its stop begins and when it is over
    assert "LB shutting down" in outputs[0] and "API node shutting down" in outputs[1]
    assert f"API node http://127.0.0.1:{api_port} stopped" in outputs[1]


def open_files_limit(pid: int) -> tuple[str, str]:
    """(soft, hard) of a process's open files limit, as /proc shows them."""
    with open(f"/proc/{pid}/limits") as f:
        [line] = [line for line in f if line.startswith("Max open files")]
    return line.split()[3], line.split()[4]


@pytest.mark.parametrize(("given", "kept", "warned"), [((256, 8192), ("8192", "8192"), False), ((256, 256), ("256", "256"), True)])
def test_a_node_raises_its_open_files_limit_to_the_hard_one_and_warns_when_that_is_low(tmp_path, given, kept, warned):
    """A soft limit of 1024 (a shell's default) made a busy node refuse connections unanswered and fail launches with
    EMFILE: a node takes what the hard limit allows, as Go's programs do, and says when that is little."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    node = subprocess.Popen([fn_core_command(), "api", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite3://{tmp_path}/fn.db"],
                            env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, given))
    try:
        wait_up(f"http://127.0.0.1:{port}/version")
        assert open_files_limit(node.pid) == kept
    finally:
        node.send_signal(signal.SIGTERM)
        _, stderr = node.communicate(timeout=30)
    assert ("open files: soft limit raised from 256 to the hard limit 8192" in stderr) is not warned
    assert ("open files limited to 256 (ulimit -n, the hard limit): a busy node needs more" in stderr) is warned


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_the_graceful_stop_stops_at_once_and_says_so_in_the_log(tmp_path, second):
    """Not click's bare "Aborted!" on stderr (SIGINT), nor a silent death (SIGTERM): lines in FN_LOG_FORMAT, in FN_LOG_DEST."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FN_")}, "FN_LOG_FORMAT": "json", "FN_SHUTDOWN_GRACE": "30"}
    node = subprocess.Popen([fn_core_command(), "api", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite3://{tmp_path}/fn.db"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/version")
        with socket.create_connection(("127.0.0.1", port)) as slow:  # a request whose body never ends: the stop waits for it
            slow.sendall(b"POST /v2/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.3)
            node.send_signal(signal.SIGINT)
            time.sleep(0.5)
            assert node.poll() is None  # in its graceful stop
            began = time.monotonic()
            node.send_signal(second)
            _, stderr = node.communicate(timeout=30)
    finally:
        node.kill()
    assert time.monotonic() - began < 5 and node.returncode == 128 + second, stderr
    entries = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object: no "Aborted!"
    said = [(e["level"], e["logger"], e["msg"]) for e in entries[-2:]]
    assert said == [
        ("warning", "fn_core.signals", f"second signal ({second.name}): stopping at once, cutting the calls still under way"),
        ("warning", "fn_core.cli", f"stopped at once by a second signal ({second.name})"),
    ]


def test_sigint_before_the_node_handles_signals_is_a_log_line_and_exit_130_not_clicks_aborted():
    """Ctrl-C while a node still starts (its stop handler not yet in): the server runner `fn_core.cli._run` turns
    the interrupt into the node's own warning line and the shell's 130."""
    script = (
        "import asyncio, logging, os, signal\n"
        "from fn_core.cli import _run\n"
        "logging.basicConfig(format='%(levelname)s %(name)s: %(message)s')\n"
        "async def starting():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    await asyncio.sleep(30)\n"
        "_run(starting())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["WARNING fn_core.cli: stopped during start-up by SIGINT"]


def _lb_refusing_one_call(tmp_path, env_extra):
    """Start `fn-core lb`, make it log one refused invoke, stop it; returns (returncode, stderr)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FN_")}, **env_extra}
    args = ["lb", "--host", "127.0.0.1", "--port", str(port), "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/fn.db"]
    with running_node(args, env, port) as lb:
        assert http("POST", f"http://127.0.0.1:{port}/invoke/01NOSUCHFN")[0] == 404
    return lb.returncode, lb.stderr


def test_fn_log_format_json_gives_one_json_object_per_line(tmp_path):
    code, stderr = _lb_refusing_one_call(tmp_path, {"FN_LOG_FORMAT": "json"})
    assert code == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "msg"} <= entry.keys() for entry in entries)
    refused = [e for e in entries if e["logger"] == "fn_core.calls"]
    assert refused and refused[0]["level"] == "info" and "status=404" in refused[0]["msg"]


def test_fn_log_dest_file_takes_the_log_lines(tmp_path):
    log_file = tmp_path / "logs" / "lb.log"
    log_file.parent.mkdir()
    code, stderr = _lb_refusing_one_call(tmp_path, {"FN_LOG_DEST": f"file://{log_file}"})
    assert code == 0, stderr
    written = log_file.read_text()
    assert "invoke rejected" in written and "status=404" in written
    assert "invoke rejected" not in stderr


def test_fn_log_dest_syslog_over_udp_tags_lines_with_fn_log_prefix(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(10)
        address = f"udp://127.0.0.1:{collector.getsockname()[1]}"
        code, stderr = _lb_refusing_one_call(tmp_path, {"FN_LOG_DEST": address, "FN_LOG_PREFIX": "edge-lb"})
        assert code == 0, stderr
        lines = []
        while not any("invoke rejected" in line for line in lines):
            lines.append(collector.recv(65536).decode())  # bounded by the socket timeout
    rejected = next(line for line in lines if "invoke rejected" in line)
    assert rejected.startswith("<14>edge-lb: ")  # facility user, level info: RFC 3164's priority, then the tag
    assert "status=404" in rejected


@pytest.mark.parametrize("value", ["ftp://logs.example", "udp://", "file://host/x", "tcp://h:notaport"])
def test_a_bad_fn_log_dest_stops_start_up_with_one_clear_line(tmp_path, value):
    result = run("lb", "--host", "127.0.0.1", "--port", str(free_port()), "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/fn.db", env={"FN_LOG_DEST": value})
    assert result.returncode == 2
    assert "log_dest" in result.stderr and "udp://host:port" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_syslog_that_refuses_stops_start_up_and_says_so(tmp_path):
    refusing = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = run("lb", "--host", "127.0.0.1", "--port", str(free_port()), "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/fn.db", env={"FN_LOG_DEST": refusing})
    assert result.returncode == 2
    assert f"log_dest {refusing!r}" in result.stderr and "refused" in result.stderr.lower()


def test_start_runs_the_node_fn_node_type_names_and_names_fn_variables_without_effect_or_misspelled(tmp_path):
    """Fn's way to pick a node: `fn-core start` with FN_NODE_TYPE=api is an API node (v2 API, no invoke);
    an Fn variable fn-core does not read, or one of ours misspelled, is named at start-up rather than silently ignored."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FN_")},
        "FN_NODE_TYPE": "api", "FN_HOST": "127.0.0.1", "FN_PORT": str(port), "FN_DB_URL": f"sqlite3://{tmp_path}/fn.db",
        "FN_HOT_POLL_MSECS": "200", "FN_RUNNER_ADRESSES": "r:9190",
    }
    with running_node(["start"], env, port) as node:
        status, app = http("POST", f"http://127.0.0.1:{port}/v2/apps", {"name": "shop"})
        assert status == 200, app
        assert http("POST", f"http://127.0.0.1:{port}/invoke/{app['id']}") == (404, {"message": "Path not found"})
    stderr = node.stderr
    assert node.returncode == 0, stderr
    assert "FN_HOT_POLL_MSECS is set, but has no effect in fn-core: waiting calls are woken when a container frees" in stderr
    assert "FN_RUNNER_ADRESSES is set, but fn-core reads no such variable: did you mean FN_RUNNER_ADDRESSES?" in stderr


def test_a_command_that_is_not_the_fn_node_type_stops_and_says_which_command_is():
    result = run("serve", "--host", "127.0.0.1", env={"FN_NODE_TYPE": "pure-runner"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "fn-core: error: FN_NODE_TYPE=pure-runner is `fn-core runner`, not `fn-core serve`: "
        "run that command (or `fn-core start`), or unset FN_NODE_TYPE"
    )


def test_an_unknown_fn_node_type_is_refused_with_the_valid_ones():
    result = run("start", env={"FN_NODE_TYPE": "master"})
    assert result.returncode == 2
    assert result.stderr.strip() == "fn-core: error: node_type (from $FN_NODE_TYPE) must be one of full, api, lb, pure-runner (or unset), got 'master'"


def test_a_runner_whose_http_port_is_taken_stops_with_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("runner", "--host", "127.0.0.1", "--grpc-port", "0", "--port", str(port),
                     env={"FN_CONTAINER_LABEL_TAG": f"fn-core-test-cli-{os.getpid()}"})
    assert result.returncode == 2
    assert f"fn-core: error: the runner could not bind 127.0.0.1:{port} for HTTP (FN_PORT: /metrics):" in result.stderr


@pytest.mark.parametrize("command", [["runner", "--grpc-port"], ["runner", "--grpc-port", "0", "--port"], ["serve", "--port"]],
                         ids=["runner-grpc", "runner-http", "serve"])
def test_a_start_that_fails_for_a_taken_port_leaves_a_live_nodes_containers_and_socket_dirs_alone(
    docker_client, echo_image, tmp_path, command
):
    """A second copy of a runner with the same FN_CONTAINER_LABEL_TAG (a restart loop racing the old process, a
    duplicated unit) stops at its taken port before sweeping what the live one holds: the sweep removed its
    containers and failed its calls."""
    tag = f"fn-core-test-cli-{os.getpid()}-{command[0]}"
    iofs = tmp_path / "iofs"
    iofs.mkdir()
    live_dir = SocketDirs(str(iofs), owner=tag).make()  # as the live runner made it for its container
    live = docker_client.containers.create(echo_image, labels={"fn-agent-classifier": tag, "fn-agent-instance": "live"})
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = run(*command, str(port), "--host", "127.0.0.1",
                         env={"FN_CONTAINER_LABEL_TAG": tag, "FN_IOFS_PATH": str(iofs), "FN_DB_URL": f"sqlite3://{tmp_path}/fn.db"})
        assert_one_error_line(result, f"127.0.0.1:{port}", "in use")
        live.reload()  # raises NotFound if the failed start removed it
        assert live.labels["fn-agent-classifier"] == tag
        assert os.path.isdir(live_dir)
    finally:
        live.remove(force=True)


def test_a_serve_with_a_bad_db_url_stops_before_its_runner_starts(docker_client, echo_image, tmp_path):
    tag = f"fn-core-test-cli-{os.getpid()}-db"
    live = docker_client.containers.create(echo_image, labels={"fn-agent-classifier": tag, "fn-agent-instance": "live"})
    try:
        result = run("serve", "--host", "127.0.0.1", "--port", "0",
                     env={"FN_CONTAINER_LABEL_TAG": tag, "FN_IOFS_PATH": str(tmp_path / "iofs"), "FN_DB_URL": "postgres://db/fn"})
        assert_one_error_line(result, "postgres://db/fn")
        # it never started, so never stopped either: no line of the runner's
        assert not [line for line in result.stderr.splitlines() if "fn_core.runner" in line], result.stderr
        live.reload()
    finally:
        live.remove(force=True)


def assert_one_error_line(result, *expected):
    """Exit status 2 and one `fn-core: error:` line, last, holding each of ``expected``; no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fn-core: error:")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    for text in expected:
        assert text in errors[0]


@pytest.mark.parametrize("command", [["api"], ["lb", "--runner", NO_RUNNER]])
def test_a_taken_port_stops_start_up_with_one_clear_line(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(*command, "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite3://{tmp_path}/fn.db")
    node = "API node" if command == ["api"] else "LB"
    assert_one_error_line(result, f"fn-core: error: the {node} could not listen on 127.0.0.1:{port} (FN_HOST, FN_PORT):", "in use")


@pytest.mark.parametrize("host", ["256.1.1.1", "no-such-host.invalid"])
def test_a_host_that_is_no_address_stops_start_up_with_one_clear_line(tmp_path, host):
    result = run("api", "--port", "0", "--db", f"sqlite3://{tmp_path}/fn.db", env={"FN_HOST": host})
    assert_one_error_line(result, f"fn-core: error: the API node could not listen on {host}:0 (FN_HOST, FN_PORT):")


def test_a_config_file_that_cannot_be_read_stops_start_up_with_one_clear_line(tmp_path):
    result = run("api", "--host", "127.0.0.1", "--port", "0", env={"FN_CONFIG": str(tmp_path)})
    assert_one_error_line(result, f"fn-core: error: config file {tmp_path} cannot be read: Is a directory")
    binary = tmp_path / "fn.toml"
    binary.write_bytes(b"\xff\xfeport = 1\n")  # UTF-16's byte order mark: not the UTF-8 TOML must be
    result = run("--config", str(binary), "api", "--host", "127.0.0.1", "--port", "0")
    assert_one_error_line(result, f"fn-core: error: config file {binary} is not UTF-8 text")


def test_an_unreachable_docker_engine_stops_runner_serve_and_build_image_with_one_clear_line(tmp_path):
    env = {"DOCKER_HOST": "unix:///nonexistent.sock", "FN_HOST": "127.0.0.1", "FN_DB_URL": f"sqlite3://{tmp_path}/fn.db",
           "FN_CONTAINER_LABEL_TAG": f"fn-core-test-cli-{os.getpid()}"}
    (tmp_path / "func.py").write_text("def handler(ctx, data=None):\n    return data\n")
    for args in (["runner", "--port", "0", "--grpc-port", "0"], ["serve", "--port", "0"], ["build-image", str(tmp_path), "-t", "t/x:1"]):
        result = run(*args, env=env)
        assert_one_error_line(result, "fn-core: error: cannot reach the Docker engine (DOCKER_HOST=unix:///nonexistent.sock): ")


def test_an_unknown_config_file_key_is_warned_about_in_the_log_format_set(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text("prot = 8080\n")
    result = run("--config", str(path), "plugins", env={"FN_LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one JSON object
    warning = next(e for e in entries if "unknown key 'prot'" in e["msg"])
    assert (warning["level"], warning["logger"]) == ("warning", "fn_core.config")
    assert warning["msg"].endswith("; ignored")


@pytest.mark.parametrize(("flag", "info_logged"), [("WARN", False), ("warn", False), ("Info", True), ("DEBUG", True)])
def test_log_level_flag_reads_what_fn_log_level_reads(tmp_path, flag, info_logged):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
    args = ["lb", "--log-level", flag, "--host", "127.0.0.1", "--port", str(port), "--runner", NO_RUNNER, "--db",
            f"sqlite3://{tmp_path}/fn.db"]
    with running_node(args, env, port) as node:
        pass  # up: its start-up lines are written
    stderr = node.stderr
    assert node.returncode == 0, stderr
    assert ("INFO fn_core.lb.pool: runner list changed pool=static " in stderr) is info_logged


def test_fn_log_level_debug_shows_fn_cores_and_plugins_debug_lines_but_not_the_docker_libraries(tmp_path):
    """Debug is for a node's own lines: docker's name the registry user of FN_DOCKER_AUTH, urllib3's each Docker call."""
    env = _installed_dist(tmp_path, "fn-chatty", "0.1", (
        "import logging\nfrom fn_core import hookimpl\n@hookimpl\ndef metric_families():\n"
        "    logging.getLogger(__name__).debug('a plugin debug line')\n    return []\n"
    ))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FN_")}, **env, "FN_LOG_LEVEL": "debug",
           "FN_REQUEST_HEADER_READ_TIMEOUT": "0.2", "FN_CONTAINER_LABEL_TAG": f"fn-core-test-cli-{os.getpid()}-debug",
           "FN_IOFS_PATH": str(tmp_path / "iofs"), "FN_DB_URL": f"sqlite3://{tmp_path}/fn.db"}
    port = free_port()
    with running_node(["serve", "--host", "127.0.0.1", "--port", str(port)], env, port) as node:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
        with socket.create_connection(("127.0.0.1", port)) as silent:  # closed unanswered, said at debug
            silent.settimeout(5)
            assert silent.recv(1) == b""
    stderr = node.stderr
    assert node.returncode == 0, stderr
    assert "DEBUG fn_core.api.connection: closed a connection that sent no request" in stderr
    assert "DEBUG fn_chatty_plugin: a plugin debug line" in stderr
    assert "INFO fn_core.runner.main:" in stderr
    assert not [line for line in stderr.splitlines() if " DEBUG " in line and " fn_" not in line], stderr


def test_a_node_names_its_version_selections_and_third_party_plugins_in_one_start_up_line(tmp_path):
    """What a bug report needs, and what tells two nodes' installs apart, without running `fn-core plugins` on them."""
    env = _installed_dist(tmp_path, "fn-quiet", "2.3.4", "from fn_core import hookimpl\n@hookimpl\ndef metric_families():\n    return []\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FN_")}, **env, "FN_LOG_FORMAT": "json",
           "FN_DISABLE_PLUGINS": "tracing"}
    port = free_port()
    args = ["lb", "--host", "127.0.0.1", "--port", str(port), "--runner", NO_RUNNER, "--db", f"sqlite3://{tmp_path}/fn.db"]
    with running_node(args, env, port) as node:
        pass
    assert node.returncode == 0, node.stderr
    starts = [entry for entry in map(json.loads, node.stderr.splitlines()) if entry["msg"].startswith("starting ")]
    assert len(starts) == 1, node.stderr
    start = starts[0]
    assert (start["level"], start["node"], start["version"]) == ("info", "lb", __version__)
    assert start["python"] == ".".join(map(str, sys.version_info[:3]))
    assert (start["placer"], start["runner_pool"]) == ("ch", "static")
    assert "driver" not in start  # an LB starts no container
    assert "fn-quiet (fn-quiet 2.3.4)" in start["plugins"].split(", ")
    assert start["disabled"] == "tracing"


def test_a_log_level_flag_that_is_no_level_is_refused_with_the_valid_ones():
    result = run("lb", "--log-level", "loud", "--host", "127.0.0.1", "--runner", NO_RUNNER)
    assert result.returncode == 2
    assert "Invalid value for '--log-level': 'loud' is not one of debug, info, warning (or warn), error (in any case)" in result.stderr


@pytest.mark.parametrize("tag", ["MyApp/hello:1", "bad tag:1"])
def test_a_tag_docker_refuses_stops_build_image_with_one_clear_line(tmp_path, tag):
    (tmp_path / "func.py").write_text("def handler(ctx, data=None):\n    return data\n")
    result = run("build-image", str(tmp_path), "-t", tag)
    assert_one_error_line(result, f"fn-core: error: cannot build {tag}: ", "invalid")


def test_plugins_lists_with_an_unknown_placer_or_pool_selected_and_says_a_server_would_not_start():
    # the listing is how an operator checks a config: it works, and says what `fn-core serve` would stop on
    result = run("plugins", env={"FN_PLACER": "nope", "FN_RUNNER_POOL": "consul"})
    # listed, then exit 2 as a server would: a script checking a config before a rollout reads the status
    assert result.returncode == 2
    assert result.stderr == "fn-core: error: unknown placer 'nope'; unknown runner pool 'consul': a server would not start\n"
    lines = result.stdout.splitlines()
    assert "selected placer: nope   driver: docker   runner pool: consul" in lines
    placer_line = next(line for line in lines if line.startswith("unknown placer 'nope': "))
    assert "a server would not start" in placer_line
    assert {"ch", "naive"} <= set(placer_line.split("available placers: ")[1].split(", "))
    assert any(line.startswith("unknown runner pool 'consul': ") for line in lines)
    assert not any(line.startswith("unknown driver") for line in lines)
    report = json.loads(run("plugins", "--json", env={"FN_PLACER": "nope"}).stdout)
    assert report["placer"] == "nope" and report["unknown"] == {"placer": "nope"}
    assert json.loads(run("plugins", "--json").stdout)["unknown"] == {}


def _installed_dist(tmp_path: Path, dist: str, version: str, module_text: str) -> dict[str, str]:
    """An installed distribution ``dist`` whose plugin (of the same name) is a module of ``module_text``; the env
    that puts it on the command's path."""
    module = dist.replace("-", "_") + "_plugin"
    (tmp_path / f"{module}.py").write_text(module_text)
    info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[fn_core.plugins]\n{dist} = {module}\n")
    return {"PYTHONPATH": str(tmp_path)}


def _typo_dist(tmp_path: Path) -> dict[str, str]:
    """An installed distribution whose plugin misspells a hook."""
    return _installed_dist(tmp_path, "fn-typo", "1.2.3", "from fn_core import hookimpl\n@hookimpl\ndef overide_call(call):\n    pass\n")


def test_a_server_with_a_misspelled_hook_stops_naming_the_distribution_and_the_closest_hook(tmp_path):
    result = run("lb", "--host", "127.0.0.1", env=_typo_dist(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "fn-core: error: plugin 'fn-typo' (fn-typo 1.2.3) is invalid: unknown hook 'overide_call' (did you mean 'override_call'?)"
    )


def test_plugins_lists_a_plugin_that_fails_in_configure_then_exits_non_zero(tmp_path):
    """The listing is where an operator looks when a node will not start: it must not stop at the same plugin."""
    env = _installed_dist(
        tmp_path, "fn-conf", "0.1", "from fn_core import hookimpl\n@hookimpl\ndef configure(config):\n    raise ValueError('no shares table')\n"
    )
    started = run("lb", "--host", "127.0.0.1", env=env)
    assert (started.returncode, started.stderr.strip()) == (
        2, "fn-core: error: plugin 'fn-conf' (fn-conf 0.1) failed in configure: ValueError: no shares table"
    )
    listed = run("plugins", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(listed.stdout)["plugins"]}
    assert (rows["fn-conf"]["status"], rows["fn-conf"]["error"]) == ("invalid", "configure raised ValueError: no shares table")
    assert rows["placer-ch"]["status"] == "active" and listed.returncode == 2


def test_plugins_lists_a_module_level_place_call_as_invalid_as_the_node_refuses_it(tmp_path):
    """A place_call outside a placer would take every placement: the node refuses it, so the listing must not call it
    active and exit 0 (an operator checks `fn-core plugins` before a rollout)."""
    env = _installed_dist(
        tmp_path, "fn-stray", "0.1", "from fn_core import hookimpl\n@hookimpl\ndef place_call(call, runners):\n    return runners[:1]\n"
    )
    started = run("lb", "--host", "127.0.0.1", env=env)
    assert started.returncode == 2
    assert started.stderr.startswith("fn-core: error: plugin 'fn-stray' (fn-stray 0.1) implements place_call outside a placer")
    listed = run("plugins", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(listed.stdout)["plugins"]}
    assert rows["fn-stray"]["status"] == "invalid" and "place_call outside a placer" in rows["fn-stray"]["error"]
    assert rows["placer-ch"]["status"] == "active" and listed.returncode == 2


def test_plugins_lists_an_invalid_plugin_marked_with_why_then_exits_non_zero(tmp_path):
    env = _typo_dist(tmp_path)
    result = run("plugins", env=env)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES", "HOOKS"]
    typo = next(line for line in lines if line.startswith("fn-typo "))
    assert typo.split()[3] == "invalid"  # why is under the table: a long reason would widen every row
    assert "fn-typo is invalid: unknown hook 'overide_call' (did you mean 'override_call'?)" in lines
    assert max(len(line) for line in lines[:lines.index("")]) < 120
    assert any(line.startswith("placer-ch ") and " active " in line for line in lines)  # the others are listed
    assert result.returncode != 0
    report = run("plugins", "--json", env=env)
    assert report.returncode != 0
    rows = {row["name"]: row for row in json.loads(report.stdout)["plugins"]}
    assert (rows["fn-typo"]["status"], rows["fn-typo"]["error"]) == ("invalid", "unknown hook 'overide_call' (did you mean 'override_call'?)")


def test_plugins_wraps_a_long_hooks_list_under_its_column(tmp_path):
    """A plugin with many hooks (contrib/fn-concurrency-limit has six) would widen every row past a terminal."""
    hooks = ("check_request", "override_call", "call_finished", "validate_app", "validate_fn", "validate_delete",
             "object_changed", "metric_families")
    module = "from fn_core import hookimpl\n" + "".join(f"@hookimpl\ndef {hook}():\n    pass\n" for hook in hooks)
    result = run("plugins", env=_installed_dist(tmp_path, "fn-many-hooks", "0.1", module))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = lines[:lines.index("")]
    assert max(len(line) for line in table) <= 118
    first = next(i for i, line in enumerate(table) if line.startswith("fn-many-hooks "))
    column = table[0].index("HOOKS")
    following = itertools.takewhile(lambda line: not line[:column].strip(), table[first + 1:])  # its own lines
    wrapped = [table[first][column:]] + [line[column:] for line in following]
    assert " ".join(wrapped).split(", ") == sorted(hooks) and len(wrapped) > 1


def test_plugins_lists_every_plugin_that_fails_in_configure_and_configures_the_others(tmp_path):
    """Two broken plugins: both listed invalid, and the plugins configured after them (the built-ins register their
    objects in configure) listed with all their hooks, as when nothing failed."""
    env = _installed_dist(
        tmp_path, "fn-conf", "0.1", "from fn_core import hookimpl\n@hookimpl\ndef configure(config):\n    raise ValueError('no shares table')\n"
    )
    _installed_dist(
        tmp_path, "fn-conf-two", "0.1", "from fn_core import hookimpl\n@hookimpl\ndef configure(config):\n    raise KeyError('region')\n"
    )
    healthy = {row["name"]: row for row in json.loads(run("plugins", "--json").stdout)["plugins"]}
    listed = run("plugins", "--json", env=env)
    assert listed.returncode == 2
    rows = {row["name"]: row for row in json.loads(listed.stdout)["plugins"]}
    assert (rows["fn-conf"]["status"], rows["fn-conf"]["error"]) == ("invalid", "configure raised ValueError: no shares table")
    assert (rows["fn-conf-two"]["status"], rows["fn-conf-two"]["error"]) == ("invalid", "configure raised KeyError: 'region'")
    for name in ("status-docker", "fn-metrics", "placer-ch"):
        assert (rows[name]["status"], rows[name]["hooks"]) == ("active", healthy[name]["hooks"])
