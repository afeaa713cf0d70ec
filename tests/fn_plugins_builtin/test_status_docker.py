"""status-docker: Docker's health and free memory/CPU in custom_status, from a cache refreshed off-loop."""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
from google.protobuf import empty_pb2

from fn_core.config import load_config
from fn_core.plugins import get_plugin_manager
from fn_core.proto import runner_pb2_grpc
from fn_core.records import RunnerStatus
from fn_core.runner.main import start_runner
from fn_plugins_builtin import status_docker


def wait_refreshed(probe: status_docker.DockerProbe) -> None:
    for _ in range(300):
        if probe.healthy is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the probe never answered")


def test_reports_docker_ok_and_free_resources(docker_client):
    probe = status_docker.DockerProbe()
    first = RunnerStatus()
    probe.runner_status(first, None)
    assert first.custom_status["docker"] == "checking" and not first.failed  # never waits for Docker
    wait_refreshed(probe)
    status = RunnerStatus()
    probe.runner_status(status, None)
    assert status.custom_status["docker"] == "ok" and not status.failed
    assert int(status.custom_status["host.mem_available_bytes"]) > 0
    assert int(status.custom_status["host.cpus"]) >= 1
    assert int(status.custom_status["host.cpu_free_mcpus"]) >= 0


def test_does_nothing_on_the_lb():
    probe = status_docker.DockerProbe()
    status = RunnerStatus()
    probe.runner_status(status, "10.0.0.1:9190")
    assert status.custom_status == {} and probe.refreshed_at == 0.0  # no probe started


def test_each_plugin_manager_has_its_own_probe():
    """Two runners in one process (tests, embedding) do not share what either saw of its engine."""
    config = load_config(env={})
    probes = [get_plugin_manager(config, load_entrypoints=False).get_plugin("status-docker:probe") for _ in range(2)]
    assert all(isinstance(p, status_docker.DockerProbe) for p in probes) and probes[0] is not probes[1]
    disabled = get_plugin_manager(load_config(env={"FN_DISABLE_PLUGINS": "status-docker"}), load_entrypoints=False)
    assert disabled.get_plugin("status-docker:probe") is None


class EngineRelay:
    """A unix socket passing bytes to and from the Docker engine's, that a test can take away and bring back."""

    def __init__(self, path: str, engine: str = "/var/run/docker.sock") -> None:
        self.path, self.engine = path, engine
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_unix_server(self._relay, self.path)

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(self.engine)
        self.writers |= {writer, engine_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, engine_writer), pipe(engine_reader, writer))


async def test_a_runner_whose_engine_stops_answering_says_so_in_its_status_and_recovers(docker_client, monkeypatch, tmp_path):
    """What an LB's status-reading placer sees over gRPC Status when the runner loses its Docker engine."""
    relay = EngineRelay(str(tmp_path / "engine.sock"))
    await relay.up()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{relay.path}")
    config = load_config(env={}, overrides={"container_label_tag": f"fn-core-test-{secrets.token_hex(4)}"})
    node = await start_runner(config, get_plugin_manager(config, load_entrypoints=False), host="127.0.0.1", port=0)

    async def status():
        async with grpc.aio.insecure_channel(node.address) as channel:
            return await runner_pb2_grpc.RunnerProtocolStub(channel).Status(empty_pb2.Empty())

    async def until_docker_reads(prefix: str, what: str):
        for _ in range(150):  # the probe asks the engine every 2 s
            answer = await status()
            if answer.customStatus["docker"].startswith(prefix):
                return answer
            await asyncio.sleep(0.1)
        raise AssertionError(f"not reached in 15 s: {what} (last: {answer.customStatus['docker']!r})")

    try:
        assert not (await until_docker_reads("ok", "the runner's status says Docker is ok")).failed
        await relay.down()
        lost = await until_docker_reads("unreachable", "the status says Docker is unreachable")
        assert (lost.failed, lost.errorCode) == (True, 503) and lost.errorStr.startswith("unreachable: ")
        await relay.up()
        assert not (await until_docker_reads("ok", "the status says Docker is ok again")).failed
    finally:
        await node.stop(grace=1)
        await relay.down()
