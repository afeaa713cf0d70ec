# Fixtures come from fn_core.testing (a pytest11 plugin); this file keeps the tests' rootdir.

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import uvloop
from aiohttp import web


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d: Path, ca_name: str) -> dict[str, str]:
    """A CA named ``ca_name`` and one certificate for 127.0.0.1 signed by it, as the node settings name them
    (both ends use the one certificate, as Fn's node certs are used)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={ca_name}",
            "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", f"{d}/node.key", "-out", f"{d}/node.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{d}/node.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key", "-CAcreateserial",
            "-days", "30", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/node.pem")  # a node warns of one ending within a week
    return {"node_cert": f"{d}/node.pem", "node_cert_key": f"{d}/node.key", "node_cert_authority": f"{d}/ca.pem"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_pki(tmp_path_factory.mktemp("pki"), "test-ca")


@pytest.fixture(scope="module")
def expired_cert(pki: dict[str, str]) -> str:
    """`pki`'s certificate again (its key, its CA), ended yesterday: one to renew, not one of another CA."""
    d = Path(pki["node_cert"]).parent
    openssl("x509", "-req", "-in", f"{d}/node.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key", "-CAcreateserial",
            "-days", "-1", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/expired.pem")
    return f"{d}/expired.pem"


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Another CA, its 127.0.0.1 certificate and key (not the `pki` certificate's key): what `pki`'s nodes must not
    trust; and ``encrypted_key``, a key with a passphrase."""
    d = tmp_path_factory.mktemp("other-pki")
    openssl("genpkey", "-algorithm", "RSA", "-aes256", "-pass", "pass:secret", "-out", f"{d}/encrypted.key")
    return {**make_pki(d, "other-ca"), "encrypted_key": f"{d}/encrypted.key"}


@pytest.fixture
def tmpfs():
    """``tmpfs(options) -> path``: a tmpfs mounted with ``options`` (``size=``, ``nr_inodes=``: a disk a test can fill;
    mounting needs root, as the suite runs) on a short new path under /tmp; unmounted after the test (a fixture that
    asks for it before `platform` outlives the nodes that use it)."""
    mounted: list[str] = []

    def mount(options: str) -> str:
        path = f"/tmp/fn-core-test-disk-{secrets.token_hex(3)}"  # short: unix sockets' paths are bounded
        os.makedirs(path)
        mounted.append(path)  # removed after the test, mounted or not
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True, capture_output=True)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.fixture
def sleeper(tmp_path):
    """``start()`` runs a copy of ``sleep`` under a name no other process has; every one started is killed after the test."""
    name = f"fn-test-sleeper-{os.getpid()}"
    program = tmp_path / name
    shutil.copy(shutil.which("sleep"), program)
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen([str(program), "60"])
        started.append(process)
        # Popen returns once exec has begun, which can be before the kernel has set the new argv: wait for it
        for _ in range(200):
            with open(f"/proc/{process.pid}/cmdline", "rb") as f:
                if f.read().startswith(str(program).encode()):
                    return process
            time.sleep(0.005)
        raise AssertionError(f"{program} never showed its argv in /proc")

    start.name = name  # type: ignore[attr-defined]
    yield start
    for process in started:
        process.kill()
        process.wait()


class ZipkinCollector:
    """Zipkin's ``/api/v2/spans``, in miniature: each POST's JSON list is kept; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.url = ""
        self.spans: list[dict] = []
        self.status = 202

    async def take(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        if self.status == 202:
            self.spans.extend(await request.json())
        return web.Response(status=self.status)

    def of_call(self, call_id: str) -> dict[str, dict]:
        """The spans tagged with this call id, by the service that sent them."""
        return {s["localEndpoint"]["serviceName"]: s for s in self.spans if s["tags"].get("fn.call_id") == call_id}


async def _collecting(collector, path: str):
    """``collector.take`` answering POSTs to ``path`` on 127.0.0.1 (a free port; ``collector.url`` says where) until the test ends."""
    app = web.Application()
    app.router.add_post(path, collector.take)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    collector.url = f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    try:
        yield collector
    finally:
        await runner.cleanup()


@pytest.fixture
async def zipkin_collector():
    """A Zipkin collector on 127.0.0.1 (its ``url`` is for FN_ZIPKIN_URL) for this test."""
    async for collector in _collecting(ZipkinCollector(), "/api/v2/spans"):
        yield collector


class JaegerCollector:
    """Jaeger's collector ``/api/traces`` (Thrift over HTTP), in miniature: each POSTed ``Batch`` is decoded by
    thriftpy2, a Thrift implementation that is not fn-core's encoder, from ``jaeger.thrift``'s structs."""

    def __init__(self) -> None:
        import thriftpy2

        self.idl = thriftpy2.load(str(Path(__file__).parent / "fn_plugins_builtin" / "jaeger.thrift"), module_name="jaeger_thrift")
        self.url = ""
        self.batches: list = []
        self.status = 202

    async def take(self, request: web.Request) -> web.Response:
        from thriftpy2.protocol import TBinaryProtocolFactory
        from thriftpy2.utils import deserialize

        assert request.content_type == "application/x-thrift"
        if self.status == 202:
            self.batches.append(deserialize(self.idl.Batch(), await request.read(), TBinaryProtocolFactory()))
        return web.Response(status=self.status)

    def of_call(self, call_id: str) -> dict[str, tuple]:
        """(span, its tags as a dict of values) of this call id, by the service (process) that sent them."""
        found = {}
        for batch in self.batches:
            for span in batch.spans:
                tags = {t.key: t.vStr if t.vType == self.idl.TagType.STRING else t.vBool for t in span.tags}
                if tags.get("fn.call_id") == call_id:
                    found[batch.process.serviceName] = (span, tags)
        return found


@pytest.fixture
async def jaeger_collector():
    """A Jaeger collector on 127.0.0.1 (its ``url`` is for FN_JAEGER_URL) for this test."""
    async for collector in _collecting(JaegerCollector(), "/api/traces"):
        yield collector


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on uvloop, the loop every fn-core node runs on (`fn_core.cli`): where uvloop differs
    from asyncio's own loop (its transports' stand-in sockets, say), the tests must see what production sees."""
    return {"uvloop": uvloop.new_event_loop}
