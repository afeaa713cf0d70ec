"""The runner channel over mTLS: the LB presents its certificate and checks the runner's against the CA."""

from __future__ import annotations

import grpc

from fn_core.proto import runner_pb2_grpc


async def test_invoke_over_mtls(pki, fake_runners, lb_factory, deploy_fn):
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
