"""FN_REGISTRY_TOKEN: a call's extension is the registry token the runner pulls a missing image with.

Against a real engine and a fake registry on 127.0.0.1 (dockerd treats loopback registries as insecure, so
plain HTTP). What dockerd 20.10 does with a pull's ``registrytoken`` (checked against this registry): it pings
``GET /v2/`` without credentials, takes the ``Bearer`` challenge, and then sends the token itself as
``Authorization: Bearer <token>`` on the manifest requests, without asking the challenge's token realm (which
it does ask when no token is given).
"""

from __future__ import annotations

import http.server
import logging
import threading

import pytest

from fn_core import hookimpl
from fn_plugins_builtin.driver_docker import REGISTRY_TOKEN_EXTENSION

TOKEN = "s3cret"


class FakeRegistry(http.server.ThreadingHTTPServer):
    """A registry that wants a bearer token and has no images; it records every request it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RegistryHandler)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _RegistryHandler(http.server.BaseHTTPRequestHandler):
    server: FakeRegistry

    def _answer(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        if self.path.startswith("/token"):
            self._send(200, b'{"token": "from-the-realm"}')
        elif self.path == "/v2/" or self.headers.get("Authorization") is None:
            challenge = f'Bearer realm="http://{self.server.host}/token",service="test"'
            self._send(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}', challenge)
        else:  # a token, but no such image here
            self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}')

    def _send(self, status: int, body: bytes, challenge: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads self.server.requests
        pass


@pytest.fixture
def registry():
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class RegistryTokenPlugin:
    """What README.md says an operator writes: an `override_call` plugin that sets the call's registry token."""

    def __init__(self, registry_host: str) -> None:
        self.registry_host = registry_host

    @hookimpl
    def override_call(self, call, extensions):
        if call.image.startswith(self.registry_host + "/"):
            extensions[REGISTRY_TOKEN_EXTENSION] = TOKEN


async def test_a_calls_registry_token_is_sent_to_the_registry_and_a_failed_pull_is_a_502_naming_the_image(
    registry, fn_platform, caplog
):
    caplog.set_level("DEBUG")
    image = f"{registry.host}/fn-core-test/absent:1"
    platform = await fn_platform(plugins=(RegistryTokenPlugin(registry.host),))
    fn = await platform.deploy(image, name="private")

    answer = await platform.invoke(fn["id"], "x")

    assert answer.status == 502, answer.body
    message = answer.json()["message"]
    assert image in message and "could not be pulled" in message
    assert TOKEN not in answer.body.decode()  # README: the value is never echoed in errors ...
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]  # ... nor logged
    assert platform.containers(fn["id"]) == []

    with registry.lock:
        seen = list(registry.requests)
    manifest = "/v2/fn-core-test/absent/manifests/1"
    # the engine asked for the challenge first, without credentials ...
    assert seen[0] == ("GET", "/v2/", None), seen
    # ... then asked for the image's manifest with the call's token as the bearer token
    assert ("GET", manifest, f"Bearer {TOKEN}") in seen or ("HEAD", manifest, f"Bearer {TOKEN}") in seen, seen
    # the token was the credential of every request that had one, and the realm was never asked for another
    assert {auth for _, _, auth in seen} <= {None, f"Bearer {TOKEN}"}, seen
    assert not [path for _, path, _ in seen if path.startswith("/token")], seen


async def test_a_registry_that_cannot_be_reached_is_said_so_without_how_the_engine_sought_it(fn_platform, caplog):
    """The engine's text names its resolver and the addresses it dialled: the operator's (the log), not the client's."""
    image = "127.0.0.1:1/fn-core-test/nowhere:1"  # nothing listens on port 1
    caplog.set_level(logging.INFO, logger="fn_core.runner.agent")
    platform = await fn_platform()
    fn = await platform.deploy(image, name="unreached")
    answer = await platform.invoke(fn["id"], "x")
    assert (answer.status, answer.json()) == (
        502, {"message": f"image {image!r} is not on this runner and could not be pulled: the registry could not be reached"}
    )
    assert "pull of image 127.0.0.1:1/fn-core-test/nowhere:1 failed" in caplog.text  # with the engine's own words
    # the function's image is its owner's fault: one warning for the pull, the call's own line, no warning per call
    started = [r for r in caplog.records if "failed to start" in r.getMessage()]
    assert started and all(r.levelname == "INFO" for r in started)
