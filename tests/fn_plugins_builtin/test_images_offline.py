"""Images on runners with no public registry: FN_DOCKER_LOAD_FILE and FN_DOCKER_AUTH, through real Docker.

A private registry is a small Docker Registry API v2 server on 127.0.0.1 (Docker trusts loopback
registries over plain HTTP) that serves one image taken from `docker save`, behind Basic auth.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import tarfile

import attrs
import pytest
from aiohttp import web

from fn_core.errors import ConfigError
from fn_core.plugins import get_plugin_manager
from fn_core.runner.main import start_runner

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
# A `docker save` layer is a plain tar; the engine detects that it is not gzipped and takes it as is.
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@attrs.define
class PrivateRegistry:
    """Serves ``repo:tag`` from a `docker save` tarball; every request must carry ``user:password``."""

    repo: str
    tag: str
    user: str
    password: str
    manifest: bytes = b""
    blobs: dict[str, bytes] = attrs.Factory(dict)
    seen: list[tuple[str, int]] = attrs.Factory(list)  # (path, status) of every request
    runner: web.AppRunner | None = None
    port: int = 0

    def load(self, saved: bytes) -> None:
        with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
            index = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
            config = tar.extractfile(index["Config"]).read()  # type: ignore[union-attr]
            layers = [tar.extractfile(path).read() for path in index["Layers"]]  # type: ignore[union-attr]
        self.blobs = {_digest(blob): blob for blob in (config, *layers)}
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config), "digest": _digest(config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)} for layer in layers],
        }).encode()

    @property
    def image(self) -> str:
        return f"127.0.0.1:{self.port}/{self.repo}:{self.tag}"

    @web.middleware
    async def basic_auth(self, request: web.Request, handler):
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.seen.append((request.path, 401))
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="fn-core-test"',
                                                "Docker-Distribution-API-Version": "registry/2.0"})
        response = await handler(request)
        self.seen.append((request.path, response.status))
        return response

    async def start(self) -> None:
        async def ping(request: web.Request) -> web.Response:
            return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

        async def manifest(request: web.Request) -> web.Response:
            if request.match_info["repo"] != self.repo or request.match_info["ref"] not in (self.tag, _digest(self.manifest)):
                raise web.HTTPNotFound()
            return web.Response(body=self.manifest, content_type=MANIFEST_TYPE,
                                headers={"Docker-Content-Digest": _digest(self.manifest)})

        async def blob(request: web.Request) -> web.Response:
            data = self.blobs.get(request.match_info["digest"])
            if data is None:
                raise web.HTTPNotFound()
            return web.Response(body=data, content_type="application/octet-stream",
                                headers={"Docker-Content-Digest": request.match_info["digest"]})

        app = web.Application(middlewares=[self.basic_auth])
        app.router.add_get("/v2/", ping)
        app.router.add_get(r"/v2/{repo:.+}/manifests/{ref}", manifest)
        app.router.add_get(r"/v2/{repo:.+}/blobs/{digest}", blob)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _untag(docker_client, ref: str) -> None:
    """Remove a tag this test made; the image under it is our echo image and stays."""
    import docker.errors

    try:
        docker_client.images.remove(ref, noprune=True)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture
async def private_registry(docker_client, echo_image):
    registry = PrivateRegistry(repo="fn-core-test/private-echo", tag=secrets.token_hex(4), user="fn", password=secrets.token_hex(8))
    registry.load(b"".join(docker_client.images.get(echo_image).save(named=False)))
    await registry.start()
    yield registry
    await registry.stop()
    _untag(docker_client, registry.image)


def _docker_auth(registry: PrivateRegistry, password: str | None = None) -> str:
    auth = base64.b64encode(f"{registry.user}:{password or registry.password}".encode()).decode()
    return json.dumps({"auths": {f"127.0.0.1:{registry.port}": {"auth": auth}}})


async def test_a_private_registry_image_runs_with_fn_docker_auth(fn_platform, private_registry, docker_client):
    platform = await fn_platform(env={"FN_DOCKER_AUTH": _docker_auth(private_registry)})
    fn = await platform.deploy(private_registry.image, name="private")

    answer = await platform.invoke(fn["id"], "from a private registry")

    assert answer.status == 200, answer.body
    assert answer.body == b"from a private registry"
    assert docker_client.images.get(private_registry.image)  # pulled onto this engine
    pulled = [path for path, status in private_registry.seen if status == 200]
    assert f"/v2/{private_registry.repo}/manifests/{private_registry.tag}" in pulled


async def test_wrong_or_missing_credentials_are_a_502_naming_the_image(fn_platform, private_registry, docker_client):
    import docker.errors

    wrong = await fn_platform(env={"FN_DOCKER_AUTH": _docker_auth(private_registry, password="not-it")})
    fn = await wrong.deploy(private_registry.image, name="private")
    answer = await wrong.invoke(fn["id"], "x")

    assert answer.status == 502, answer.body
    assert private_registry.image in answer.json()["message"]
    assert ("/v2/", 401) in private_registry.seen and all(status == 401 for _, status in private_registry.seen)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(private_registry.image)

    none = await fn_platform()  # no FN_DOCKER_AUTH (and no ~/.docker/config.json for the registry)
    fn = await none.deploy(private_registry.image, name="private")
    assert (await none.invoke(fn["id"], "x")).status == 502


async def test_without_fn_docker_auth_the_credentials_of_docker_login_are_used(fn_platform, private_registry, tmp_path, monkeypatch):
    """An operator who ran `docker login` on the runner's host: the engine client's config.json has the auth."""
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(_docker_auth(private_registry))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))  # where `docker login` writes, as the SDK looks it up
    platform = await fn_platform()
    fn = await platform.deploy(private_registry.image, name="private")

    answer = await platform.invoke(fn["id"], "with docker login's credentials")

    assert (answer.status, answer.body) == (200, b"with docker login's credentials")
    pulled = [path for path, status in private_registry.seen if status == 200]
    assert f"/v2/{private_registry.repo}/manifests/{private_registry.tag}" in pulled  # pulled now, with the auth


async def test_fn_docker_load_file_loads_images_before_the_first_call(fn_platform, docker_client, echo_image, tmp_path):
    import docker.errors

    image = f"fn-core-test/loaded-echo:{secrets.token_hex(4)}"
    docker_client.images.get(echo_image).tag(image)
    tarball = tmp_path / "images.tar"
    try:
        tarball.write_bytes(b"".join(docker_client.images.get(image).save(named=image)))
        _untag(docker_client, image)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image)

        platform = await fn_platform(env={"FN_DOCKER_LOAD_FILE": str(tarball)})

        assert docker_client.images.get(image)  # loaded at start, before any call
        fn = await platform.deploy(image, name="loaded")
        answer = await platform.invoke(fn["id"], "loaded from a tarball")
        assert answer.status == 200, answer.body
        assert answer.body == b"loaded from a tarball"
    finally:
        _untag(docker_client, image)


@pytest.mark.parametrize(("content", "reason"), [(None, "No such file"), (b"not a tar", "could not load")])
async def test_a_bad_load_file_stops_the_runner_naming_it(docker_client, tmp_path, fn_config, content, reason):
    from fn_core.config import load_config

    path = tmp_path / "images.tar"
    if content is not None:
        path.write_bytes(content)
    config = load_config(env={"FN_DOCKER_LOAD_FILE": str(path), "FN_CONTAINER_LABEL_TAG": f"fn-core-test-{secrets.token_hex(4)}"})
    pm = get_plugin_manager(config, load_entrypoints=False)

    with pytest.raises(ConfigError) as caught:
        await start_runner(config, pm, host="127.0.0.1", port=0)

    assert str(path) in str(caught.value) and reason in str(caught.value)
