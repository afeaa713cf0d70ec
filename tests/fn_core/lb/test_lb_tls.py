"""The runner channel over mTLS: the LB presents its certificate and checks the runner's against the CA."""

from __future__ import annotations

import subprocess

import grpc

from fn_core.proto import runner_pb2_grpc


def make_pki(d) -> dict[str, str]:
    """A CA and one certificate for 127.0.0.1 (used by both ends, as Fn's node certs are)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", f"{d}/node.key", "-out", f"{d}/node.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", f"{d}/node.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/node.pem")
    return {"node_cert": f"{d}/node.pem", "node_cert_key": f"{d}/node.key", "node_cert_authority": f"{d}/ca.pem"}


async def test_invoke_over_mtls(tmp_path, fake_runners, lb_factory, deploy_fn):
    pki = make_pki(tmp_path)
    read = lambda p: open(p, "rb").read()  # noqa: E731
    runner = await fake_runners()
    await runner.server.stop(None)  # re-serve the fake on a TLS port that requires client certificates
    runner.server = grpc.aio.server()
    runner_pb2_grpc.add_RunnerProtocolServicer_to_server(runner, runner.server)
    creds = grpc.ssl_server_credentials(
        [(read(pki["node_cert_key"]), read(pki["node_cert"]))], root_certificates=read(pki["node_cert_authority"]),
        require_client_auth=True,
    )
    port = runner.server.add_secure_port("127.0.0.1:0", creds)
    await runner.server.start()
    address = f"127.0.0.1:{port}"
    _, session, _ = await lb_factory([address], **pki)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="secret") as r:
        assert r.status == 200 and await r.text() == "secret"
    assert len(runner.calls) == 1
    # without a client certificate the runner refuses the handshake: never reached, so 503 in the end
    _, plain, _ = await lb_factory([address], node_cert_authority=pki["node_cert_authority"], placer_timeout_s=0.3)
    await deploy_fn(plain)
    async with plain.get("/v2/fns") as r:
        fn_id = (await r.json())["items"][0]["id"]
    async with plain.post(f"/invoke/{fn_id}", data="x") as r:
        assert r.status == 503
    assert len(runner.calls) == 1
