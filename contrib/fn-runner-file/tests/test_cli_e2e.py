"""As an operator runs it: `fn-core runner` and `fn-core lb --runner-pool file` processes, the file edited live."""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from fn_core.testing import free_port

FN_CORE = str(Path(sys.executable).parent / "fn-core")


def spawn(args, log: Path, **env) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([FN_CORE, *args], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


async def answered(session, url: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(300):  # bounded: ~30 s
        assert proc.poll() is None, log.read_text()
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered: {log.read_text()}")


async def test_lb_process_follows_the_runners_file(tmp_path, docker_client, echo_image):
    runners_file, lb_port, grpc_port = tmp_path / "runners", free_port(), free_port()
    config = tmp_path / "fn.toml"
    config.write_text(f'runner_pool = "file"\nrunner_pool_refresh_ms = 50\n[plugins.runner-file]\npath = "{runners_file}"\n')
    tag = f"fn-runner-file-{secrets.token_hex(3)}"
    runner = spawn(["runner", "--host", "127.0.0.1", "--grpc-port", str(grpc_port), "--port", "0"], tmp_path / "runner.log",
                   FN_CONTAINER_LABEL_TAG=tag, FN_IOFS_PATH="/tmp/fn-core-test-iofs")
    lb = spawn(["--config", str(config), "lb", "--host", "127.0.0.1", "--port", str(lb_port), "--db", f"sqlite3://{tmp_path}/fn.db"],
               tmp_path / "lb.log")
    url = f"http://127.0.0.1:{lb_port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await answered(session, url + "/version", lb, tmp_path / "lb.log")
            async with session.post(url + "/v2/apps", json={"name": "ops"}) as r:
                app_id = (await r.json())["id"]
            async with session.post(url + "/v2/fns", json={"name": "echo", "app_id": app_id, "image": echo_image}) as r:
                fn_id = (await r.json())["id"]

            runners_file.write_text(f"127.0.0.1:{grpc_port}\n")  # the runner joins while the LB runs
            for _ in range(100):  # bounded: 5 s for the next refresh to take it in
                async with session.get(url + "/metrics") as r:
                    if "\nfn_lb_runners 1\n" in await r.text():
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the LB did not take the runner from the file: {(tmp_path / 'lb.log').read_text()}")
            async with session.post(f"{url}/invoke/{fn_id}", data=b"through the file pool") as r:
                assert (r.status, await r.read()) == (200, b"through the file pool")
        assert "runner list changed pool=file runners=1 added=" in (tmp_path / "lb.log").read_text()
    finally:
        for proc in (lb, runner):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (lb, runner)]
        for container in docker_client.containers.list(all=True, filters={"label": f"fn-agent-classifier={tag}"}):
            container.remove(force=True)
    assert codes == [0, 0], (tmp_path / "lb.log").read_text()
