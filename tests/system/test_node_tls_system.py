"""FN_NODE_CERT, FN_NODE_CERT_KEY and FN_NODE_CERT_AUTHORITY with real `fn-core lb` and `fn-core runner` processes.

What an operator checks: a call runs over mTLS; each mismatch (no client certificate, another CA, TLS on one end
only) costs a call Fn's 503 after FN_PLACER_TIMEOUT, runs nothing on the runner and is said once in the LB's log
with the settings to look at, and once in the runner's where the runner can tell; a runner (or LB) given TLS files it cannot use does not start, and says which.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from fn_core.testing import free_port

from .conftest import credentials, post, runner_status, tls_env

FN_CORE = str(Path(sys.executable).parent / "fn-core")
TIMEOUT = aiohttp.ClientTimeout(total=120)
MB = 1024 * 1024
PLACER_TIMEOUT_S = 1.0
TOO_BUSY = {"message": "Timed out - server too busy"}  # Fn's ErrCallTimeoutServerBusy: no runner took the call


async def test_a_call_runs_over_mtls_between_an_lb_and_a_runner(platform, deploy_echo, pki):
    runner = await platform.runner(credentials=credentials(pki), **tls_env(pki))
    lb = await platform.lb([runner], **tls_env(pki))
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        status, headers, body = await post(s, f"/invoke/{fn_id}", b"over mTLS")
        assert (status, body) == (200, b"over mTLS") and headers["Fn-Call-Id"]
        status, _, body = await post(s, f"/invoke/{fn_id}", {"repeat": MB, "text": "t"})  # many frames each way over TLS
        assert status == 200 and body == b"t" * MB
    assert (await runner.status()).requests_received == 2
    lines = lb.proc.call_lines()
    assert [(line[2], line[3]) for line in lines] == [(runner.address, 200)] * 2
    assert "unreachable" not in lb.proc.log() and "not encrypted" not in lb.proc.log()
    # each side says at start that TLS is on (an operator checking a deployment reads it there)
    assert "runner channels use TLS: runners' certificates checked against FN_NODE_CERT_AUTHORITY" in lb.proc.log()
    assert f"runner listening on {runner.address} (gRPC RunnerProtocol, mTLS: LBs need a certificate its CA signed)" in runner.proc.log()

    # the runner demands a client certificate its CA signed: grpcio without one (or in plaintext) gets nothing
    for refused in (credentials(pki, with_cert=False), None):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await runner_status(runner.address, refused)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await runner.status()).requests_received == 2


# (runner's settings, LB's settings, what the LB's one line on the runner says, in parts, what a TLS runner's one line on
# the LB says, in parts: () for none): settings from the fixtures' files. Our LB hangs up on a runner certificate it does
# not trust without a TLS alert, so that runner cannot tell it from a TCP probe, and says nothing; a plaintext runner
# has its own line.
MISMATCHES = {
    "LB without a client certificate": (
        lambda pki, other: tls_env(pki),
        lambda pki, other: tls_env(pki, FN_NODE_CERT=None, FN_NODE_CERT_KEY=None),
        ("the peer closed the connection right after the TLS handshake, before any HTTP/2 frame: the runner refused this "
         "LB's client certificate (FN_NODE_CERT: not set, expired, or not signed by the CA of the runner's FN_NODE_CERT_AUTHORITY)",),
        ("TLS handshake from 127.0.0.1 failed: SSLError: [SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE]",
         ": the client sent no certificate: an LB needs FN_NODE_CERT and FN_NODE_CERT_KEY, signed by the CA of this runner's "
         "FN_NODE_CERT_AUTHORITY"),
    ),
    "LB certificate signed by another CA": (
        lambda pki, other: tls_env(pki),
        lambda pki, other: tls_env(pki, FN_NODE_CERT=other["node_cert"], FN_NODE_CERT_KEY=other["node_cert_key"]),
        ("right after the TLS handshake", ": the runner refused this LB's client certificate"),
        ("TLS handshake from 127.0.0.1 failed: SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]",
         ": the client's certificate is not signed by the CA of this runner's FN_NODE_CERT_AUTHORITY"),
    ),
    "runner certificate signed by a CA the LB does not trust": (
        lambda pki, other: tls_env(pki),
        lambda pki, other: tls_env(other),
        ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
         ": the runner's certificate is not one this LB's FN_NODE_CERT_AUTHORITY signed for that address (or for "
         "FN_NODE_CERT_SERVER_NAME, when set; an Fn runner's is made for 127.0.0.1)"),
        (),
    ),
    "plaintext LB, TLS runner": (
        lambda pki, other: tls_env(pki),
        lambda pki, other: {},
        ("the peer closed the connection before any HTTP/2 frame: the runner may serve TLS only (FN_NODE_CERT set there) and "
         "this LB speaks plaintext to runners (FN_NODE_CERT_AUTHORITY not set)",),
        ("TLS handshake from 127.0.0.1 failed: SSLError: [SSL: WRONG_VERSION_NUMBER]",
         ": the client speaks plaintext, and this runner serves TLS only (FN_NODE_CERT is set): an LB speaks TLS to runners "
         "with FN_NODE_CERT_AUTHORITY"),
    ),
    "TLS LB, plaintext runner": (
        lambda pki, other: {},
        lambda pki, other: tls_env(pki),
        ("SSLError: [SSL: WRONG_VERSION_NUMBER]",
         ": the runner does not serve TLS (no FN_NODE_CERT there) and this LB speaks only TLS to runners (FN_NODE_CERT_AUTHORITY "
         "is set)"),
        (),
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
async def test_a_tls_mismatch_places_nothing_answers_503_and_the_lb_says_why_once(platform, deploy_echo, pki, other_pki, case):
    make_runner_env, make_lb_env, why, runner_says = MISMATCHES[case]
    runner_env, lb_env = make_runner_env(pki, other_pki), make_lb_env(pki, other_pki)
    runner = await platform.runner(credentials=credentials(pki) if runner_env else None, **runner_env)
    lb = await platform.lb([runner], FN_PLACER_TIMEOUT=str(PLACER_TIMEOUT_S), **lb_env)
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        fn_id = (await deploy_echo(s, platform.image))["fn"]["id"]
        for body in (b"first", b"second"):
            started = time.monotonic()
            status, headers, answer = await post(s, f"/invoke/{fn_id}", body)
            waited = time.monotonic() - started
            assert (status, json.loads(answer)) == (503, TOO_BUSY), answer
            assert headers["Retry-After"] == "15" and headers["Fn-Call-Id"]
            assert PLACER_TIMEOUT_S <= waited < PLACER_TIMEOUT_S + 5  # it waited for a runner, as long as it may
    status = await runner.status()
    assert (status.requests_received, status.custom_status["runner.containers"]) == (0, "0")  # the runner ran nothing

    log = lb.proc.log()
    said = [line for line in log.splitlines() if f"runner unreachable, skipped until it answers runner={runner.address} " in line]
    assert len(said) == 1, log  # once for the outage, not once per attempt (each call tried it ~100 times)
    assert all(part in said[0] for part in why), said[0]
    assert " WARNING fn_core.lb.runner_client: " in said[0]
    assert [(line[2], line[3]) for line in lb.proc.call_lines()] == [("-", 503)] * 2
    if not lb_env.get("FN_NODE_CERT") and lb_env:
        assert "runner channels use TLS without a client certificate (FN_NODE_CERT not set)" in log
    if not runner_env:  # the plaintext runner tells its own operator what came, once though the LB kept trying
        came = "connection from 127.0.0.1 refused: not an HTTP/2 client: it began a TLS handshake, and this server does not serve TLS"
        [line] = [line for line in runner.proc.log().splitlines() if "not an HTTP/2 client" in line]
        assert came in line and " WARNING fn_core.transport.server: " in line, line
    told = [line for line in runner.proc.log().splitlines() if "TLS handshake from" in line]
    if runner_says:  # once, though the LB tried ~100 times, with the settings to look at
        assert len(told) == 1 and " WARNING fn_core.transport.server: " in told[0], told
        assert all(part in told[0] for part in runner_says), told[0]
    else:
        assert told == []


def node_command(tmp_path: Path, command: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`fn-core <command>` on free loopback ports, and its environment: ``env`` over the suite's base."""
    args = [FN_CORE, command, "--host", "127.0.0.1", "--port", str(free_port())]
    if command == "runner":
        args += ["--grpc-port", str(free_port())]
    else:
        args += ["--runner", "127.0.0.1:1", "--db", f"sqlite3://{tmp_path}/lb.db"]
    base = {"FN_IOFS_PATH": "/tmp/fn-core-sys-iofs", "FN_LOG_LEVEL": "info", "FN_CONTAINER_LABEL_TAG": f"fn-core-sys-tls-{os.getpid()}"}
    return args, {**os.environ, **base, **env}


def start_and_fail(tmp_path: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `fn-core <command>` with ``env`` as a node that must refuse to start (bounded: a node that starts is killed)."""
    args, full_env = node_command(tmp_path, command, env)
    return subprocess.run(args, env=full_env, capture_output=True, text=True, timeout=60)


def start_and_stop(tmp_path: Path, command: str, env: dict[str, str]) -> str:
    """Run `fn-core <command>` with ``env`` until it says it is listening, stop it (SIGTERM); what it logged."""
    args, full_env = node_command(tmp_path, command, env)
    log_path = tmp_path / f"{command}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # bounded: ~30 s
            if "listening on" in log_path.read_text() or proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    return log_path.read_text()


@pytest.mark.parametrize("command", ["runner", "lb"])
def test_a_node_with_an_expired_certificate_says_so_at_start(tmp_path, pki, expired_cert, command):
    """Its peers refuse it call by call, each with a line of its own; the node itself says once which file to renew."""
    log = start_and_stop(tmp_path, command, tls_env(pki, FN_NODE_CERT=expired_cert))
    said = [line for line in log.splitlines() if f"FN_NODE_CERT={expired_cert}: the certificate expired on " in line]
    assert len(said) == 1 and said[0].endswith("UTC: peers refuse this node until it is renewed"), log
    assert "listening on" in log  # it starts: the clock alone does not keep a node down


# a runner's settings that stop it, and the one line that says why (from the two fixtures' files)
UNUSABLE = {
    "key of another certificate": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_KEY=other["node_cert_key"]),
        lambda pki, other: f"FN_NODE_CERT_KEY={other['node_cert_key']} is not the private key of the certificate "
                           f"FN_NODE_CERT={pki['node_cert']}",
    ),
    "missing certificate file": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT="/nonexistent/node.pem"),
        lambda pki, other: "FN_NODE_CERT=/nonexistent/node.pem: No such file or directory",
    ),
    "missing key file": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_KEY="/nonexistent/node.key"),
        lambda pki, other: "FN_NODE_CERT_KEY=/nonexistent/node.key: No such file or directory",
    ),
    "missing CA file": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_AUTHORITY="/nonexistent/ca.pem"),
        lambda pki, other: "FN_NODE_CERT_AUTHORITY=/nonexistent/ca.pem: No such file or directory",
    ),
    "CA file without a certificate": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_AUTHORITY=pki["node_cert_key"]),
        lambda pki, other: f"FN_NODE_CERT_AUTHORITY={pki['node_cert_key']}: no PEM certificate in it",
    ),
    "certificate file without a certificate": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT=pki["node_cert_key"]),
        lambda pki, other: f"FN_NODE_CERT={pki['node_cert_key']}: no PEM certificate in it",
    ),
    "certificate without a key": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_KEY=None),
        lambda pki, other: f"FN_NODE_CERT={pki['node_cert']}: no PEM private key in it, and FN_NODE_CERT_KEY is not set",
    ),
    "encrypted key": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_KEY=other["encrypted_key"]),
        lambda pki, other: f"FN_NODE_CERT_KEY={other['encrypted_key']}: the private key is encrypted",
    ),
    "no CA (it would take any client)": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT_AUTHORITY=None),
        lambda pki, other: "FN_NODE_CERT_AUTHORITY not set; a runner serves TLS only with its certificate",
    ),
    "a CA and no certificate": (
        lambda pki, other: tls_env(pki, FN_NODE_CERT=None, FN_NODE_CERT_KEY=None),
        lambda pki, other: "FN_NODE_CERT not set; a runner serves TLS only with its certificate",
    ),
}


def error_line(stderr: str) -> str:
    """The one error line a node that cannot start ends with, after its start-up line (what it is, and its versions):
    no traceback, nothing else."""
    starting, error = stderr.strip().splitlines()
    assert " INFO fn_core.cli: starting node=" in starting, stderr
    return error


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_a_runner_with_unusable_tls_settings_does_not_start_and_says_which(tmp_path, pki, other_pki, case):
    env, says = (make(pki, other_pki) for make in UNUSABLE[case])
    done = start_and_fail(tmp_path, "runner", env)
    assert done.returncode == 2, done.stdout + done.stderr  # fn-core's exit status for a configuration error
    assert done.stdout == ""
    assert error_line(done.stderr).startswith(f"fn-core: error: TLS for the runner: {says}"), done.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (lambda pki, other: tls_env(pki, FN_NODE_CERT_AUTHORITY=None),
         lambda pki, other: "FN_NODE_CERT_AUTHORITY not set; with FN_NODE_CERT the LB also needs the CA"),
        (lambda pki, other: tls_env(pki, FN_NODE_CERT_KEY=other["node_cert_key"]),
         lambda pki, other: f"FN_NODE_CERT_KEY={other['node_cert_key']} is not the private key of the certificate "
                            f"FN_NODE_CERT={pki['node_cert']}"),
        (lambda pki, other: tls_env(pki, FN_NODE_CERT_AUTHORITY="/nonexistent/ca.pem"),
         lambda pki, other: "FN_NODE_CERT_AUTHORITY=/nonexistent/ca.pem: No such file or directory"),
        (lambda pki, other: {"FN_NODE_CERT_SERVER_NAME": "127.0.0.1"},
         lambda pki, other: "FN_NODE_CERT_SERVER_NAME is set, but FN_NODE_CERT_AUTHORITY is not"),
    ],
    ids=["a certificate and no CA (plaintext, not TLS)", "key of another certificate", "missing CA file",
         "a server name and no CA"],
)
def test_an_lb_with_unusable_tls_settings_does_not_start_and_says_which(tmp_path, pki, other_pki, env, says):
    done = start_and_fail(tmp_path, "lb", env(pki, other_pki))
    assert done.returncode == 2, done.stdout + done.stderr
    assert error_line(done.stderr).startswith(f"fn-core: error: TLS for the runner channels: {says(pki, other_pki)}"), done.stderr
