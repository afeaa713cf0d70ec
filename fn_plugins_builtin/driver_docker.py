"""The Docker driver: hot containers through the Docker Engine, hardened the way Fn's driver does it.

The docker SDK blocks, so every engine call runs in a worker thread (creates, pulls and removals, which a hung
engine may hold for the SDK's 60 s, in threads of their own; the rest in `asyncio.to_thread`); none of them is on
the warm call path (that is the unix socket, see `fn_core.runner.uds`).
Containers carry ``fn-agent-classifier=<FN_CONTAINER_LABEL_TAG>`` (``fn-core`` when unset) and a per-process
``fn-agent-instance`` label, so leaked ones can be found after a crash; a runner whose tag was set removes, at
start-up, those of its tag that another instance left (Fn's rule: without a tag of its own it removes nothing).

Every container is attached (Docker's attach stream, read on the event loop): from before it starts where
the agent wants its output (to the call's sink), else right after the start (off the create -> start path).
The stream's end tells, without a thread or a poll, that the container stopped. `wait_exit` uses that while the container starts, so a function
that crashes at start fails its call at once, with its exit code; once the container is ready the
attachment is dropped, unless its output is wanted.

A launch that cannot reach the engine (dockerd stopped or restarting, or not answering) is a NACK, not a 500:
nothing ran, so the LB tries another runner; until the engine answers again the others are refused without
asking it (`fn_plugins_builtin.engine_outage`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from fn_core import Driver, hookimpl
from fn_core.errors import (
    APIError,
    ConfigError,
    ContainerEngineUnavailable,
    DockerPullTimeout,
    ImageWithVolume,
    ServerTooBusy,
    SyslogUnavailable,
)
from fn_core.hook_calls import run_failing_call
from fn_core.models import Call
from fn_core.runner.driver import REMOVE_RETRY_S, ExitStatus, OutputSink, label_tag, sweeps_leftovers
from fn_core.runner.shortage import runner_out_of
from fn_plugins_builtin.docker_attach import attach_socket, let_go, read_output
from fn_plugins_builtin.docker_engine import (
    bound_every_request,
    disk_full,
    engine_refusal,
    in_daemon_thread,
    left_alone,
    pull_failure,
    registry_auths,
    storage_size_unsupported,
)
from fn_plugins_builtin.engine_outage import PING_TIMEOUT_S, EngineOutage, engine_unreachable
from fn_plugins_builtin.image_cache import CachedImage, ImageCache
from fn_plugins_builtin.prefork import PreforkPool

log = logging.getLogger(__name__)
T = TypeVar("T")

CLASSIFIER_LABEL = "fn-agent-classifier"
INSTANCE_LABEL = "fn-agent-instance"
REGISTRY_TOKEN_EXTENSION = "FN_REGISTRY_TOKEN"
IOFS_MOUNT = "/tmp/iofs"
MB = 1024 * 1024
#: how long start-up waits for the engine's first answers: a hung engine stops it with a clear line at once
#: rather than after the SDK's 60 s (the engine's version and a ping; later requests keep the SDK's bound)
ENGINE_FIRST_ANSWER_S = 10.0
EXIT_POLL_S = 0.05  # how often `exit_status` asks whether a container it waits for has stopped
#: launches asking the engine at a time (as many as the loop's default executor, where they ran before, has threads):
#: the first of a cold-start storm are not slowed by the last. A launch given up on a hung engine frees its place
#: (its thread runs on alone, until the SDK's timeout)
LAUNCHES_AT_ONCE = min(32, (os.cpu_count() or 1) + 4)


def log_config(call: Call) -> Any:
    """Where a function's stdout/stderr go, as in Fn: nowhere, unless its app has a ``syslog_url``.

    Then Docker's syslog driver sends each line there (RFC 5424, facility user, tagged
    ``app_id=...,fn_id=...``). Docker takes one address: of a comma list, the first.
    """
    from docker.types import LogConfig

    url = call.syslog_url.split(",")[0].strip()
    if not url:
        return LogConfig(type="none")
    tag = f"app_id={call.app_id},fn_id={call.fn_id}"
    return LogConfig(type="syslog", config={"syslog-address": url, "syslog-facility": "user",
                                            "syslog-format": "rfc5424", "tag": tag})


class _OptionsRefused(Exception):
    """The docker SDK refused the options of containers.create()."""


class _ImageMissing(Exception):
    """The image is not on this engine: the launch pulls it (outside the worker thread, to bound the wait)."""


class _ExitWatch:
    """The `OutputSink` of a container's attach stream: its output goes on to the call's sink (None: dropped,
    as Fn's pure runner drops it), and the stream's end (Docker ends it when the container stops) is ``ended``."""

    def __init__(self, sink: OutputSink | None) -> None:
        self.sink = sink
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def write(self, stream: str, data: bytes) -> None:
        if self.sink is not None:
            self.sink.write(stream, data)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if not self.ended.done():
            self.ended.set_result(None)


@attrs.define(eq=False)
class _Attachment:
    """One container's attach stream on the event loop, read until the container stops or we let go."""

    transport: asyncio.BaseTransport | None  # None: the container had stopped before we could attach
    watch: _ExitWatch

    def close(self) -> None:
        if self.transport is not None:
            let_go(self.transport)  # the sink is told its output ended


class DockerDriver:
    def __init__(self, config: Any, hook: Any) -> None:
        self.config = config
        self.hook = hook
        self.instance = secrets.token_hex(8)
        self.client: Any = None
        self.pull_client: Any = None
        self.registry_auths: Any = None  # docker.auth.AuthConfig from FN_DOCKER_AUTH, or None
        # FN_DOCKER_NETWORKS: how many of our containers each network holds (a new one goes on the least used)
        self._network_use: dict[str, int] = {name: 0 for name in config.docker_networks}
        self._container_networks: dict[str, str] = {}
        self._pulls: dict[str, asyncio.Future[None]] = {}  # image -> the one pull every launch needing it waits on
        # FN_IMAGE_CLEAN_MAX_SIZE: which image each container of ours runs, and the images' sizes and uses
        self.images = ImageCache(config.image_clean_max_size, config.image_clean_exempt_tags) if config.image_clean_max_size else None
        self._container_images: dict[str, str] = {}
        self._attached: dict[str, _Attachment] = {}  # container id -> its attach stream (output, and exit while starting)
        self._cleaning: asyncio.Task[None] | None = None
        self.label_tag = label_tag(config)
        labels = {CLASSIFIER_LABEL: self.label_tag, INSTANCE_LABEL: self.instance}
        self.prefork = PreforkPool(config, labels) if config.prefork_pool_size else None
        self._refilling: asyncio.Task[None] | None = None
        self._discarding: set[asyncio.Future[None]] = set()
        # creates and starts in their threads, which a cancelled launch cannot stop: close() lets them end
        self._creating: set[asyncio.Future[Any]] = set()
        self._launch_places = asyncio.Semaphore(LAUNCHES_AT_ONCE)
        # containers a failed or given-up launch made and could not remove: tried again until they are gone
        self.leftovers: set[str] = set()
        self._removing_leftovers: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.ping_client: Any = None  # asks whether the engine answers at all, with a short timeout
        self.outage = EngineOutage(self._ping_engine)  # while the engine does not answer, launches are NACKed

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        import docker

        self.registry_auths = registry_auths(self.config.docker_auth)  # a bad value stops start-up first
        self._loop = asyncio.get_running_loop()
        probe = await asyncio.to_thread(docker.from_env, timeout=ENGINE_FIRST_ANSWER_S)
        try:
            await asyncio.to_thread(probe.ping)
            self.client = docker.from_env(version=probe.api.api_version)  # a version given: no request
            self.ping_client = docker.from_env(version=probe.api.api_version, timeout=PING_TIMEOUT_S)
        finally:
            probe.close()
        await asyncio.to_thread(self._check_engine_can_honour_settings)
        # pulls get their own client whose socket reads give up with FN_HOT_PULL_TIMEOUT_MSECS, so a
        # registry that stops answering cannot keep a pull's thread waiting for ever
        pull_timeout_s = max(1.0, self.config.hot_pull_timeout_msecs / 1000)
        self.pull_client = await asyncio.to_thread(docker.from_env, timeout=pull_timeout_s)
        bound_every_request(self.pull_client.api, pull_timeout_s)
        if sweeps_leftovers(self.config):  # a tag of this runner's own: what it labels is no neighbour's
            leaked = f"{CLASSIFIER_LABEL}={self.label_tag}"
            removed = await asyncio.to_thread(self._remove_labelled, leaked, "leaked", spare_own=True)
            if removed:
                log.info("removed %d leaked container(s) labelled %s=%s", removed, CLASSIFIER_LABEL, self.label_tag)
        if self.config.docker_load_file:
            await asyncio.to_thread(self._load_images, self.config.docker_load_file)
        if self.prefork is not None:  # a donor that cannot be made stops start-up, with why
            if not await asyncio.to_thread(self._image_present, self.prefork.image):
                try:
                    await self._pull(self.prefork.image, None)
                except APIError as exc:
                    raise ConfigError(f"FN_EXPERIMENTAL_PREFORK_IMAGE: {exc.message}") from None
            await self._refill(at_start=True)
            if self.config.docker_networks and not self.prefork.networks:
                log.warning("FN_DOCKER_NETWORKS is set but FN_EXPERIMENTAL_PREFORK_NETWORKS is not: a container that joins "
                            "a donor is on the donors' network (Docker's default), not on %s", " ".join(self.config.docker_networks))
            log.info("prefork pool: %d donor container(s) of %s lend their network namespaces to new containers%s",
                     self.prefork.size, self.prefork.image, ", each once" if self.prefork.use_once else "")

    def _check_engine_can_honour_settings(self) -> None:
        """A setting this engine cannot honour stops start-up, naming it, rather than failing every call."""
        import docker.errors

        named = [("FN_DOCKER_NETWORKS", name) for name in self.config.docker_networks]
        if self.prefork is not None:
            named += [("FN_EXPERIMENTAL_PREFORK_NETWORKS", name) for name in self.prefork.networks]
        for setting, name in named:
            try:
                self.client.networks.get(name)
            except docker.errors.NotFound:
                raise ConfigError(f"{setting}: the Docker engine has no network {name!r} (`docker network ls` lists them)") from None
        if self.config.max_fs_size_mb:
            why_not = storage_size_unsupported(self.client.info())
            if why_not:
                raise ConfigError(f"FN_MAX_FS_SIZE_MB: {why_not}")

    def _image_present(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    async def _refill(self, at_start: bool = False) -> None:
        """Make donors up to the pool's size, one at a time. At start-up a failure stops it (ConfigError);
        later it is logged, and the pool stays smaller until the next container goes."""
        pool = self.prefork
        assert pool is not None
        while pool.missing() > 0 and not self._closing:
            pool.making += 1
            try:
                donor = await asyncio.to_thread(pool.make, self.client)
            except ConfigError as exc:
                if at_start:
                    raise
                log.warning("prefork pool: %s", exc)
                return
            finally:
                pool.making -= 1
            pool.free.append(donor)

    def _refill_soon(self) -> None:
        if self._closing:
            return
        if self._refilling is None or self._refilling.done():
            self._refilling = asyncio.get_running_loop().create_task(self._refill(), name="prefork refill")

    def _load_images(self, path: str) -> None:
        """Fn's FN_DOCKER_LOAD_FILE: images for a runner that has no registry, loaded before any call."""
        import docker.errors

        try:
            with open(path, "rb") as tarball:
                images = self.client.images.load(tarball)
        except OSError as exc:
            raise ConfigError(f"docker_load_file: cannot read {path}: {exc.strerror or exc}") from None
        except docker.errors.DockerException as exc:  # APIError, or ImageLoadError from the load's own stream
            reason = getattr(exc, "explanation", None) or exc
            raise ConfigError(f"docker_load_file: Docker could not load {path}: {reason}") from None
        tags = sorted(tag for image in images for tag in image.tags) or [image.short_id for image in images]
        log.info("loaded %d image(s) from %s: %s", len(images), path, ", ".join(tags))

    def _remove_labelled(self, label: str, what: str, *, spare_own: bool = False) -> int:
        """Remove the containers carrying ``label`` (``spare_own``: not those of this process); how many went."""
        import docker.errors
        import requests.exceptions

        count = 0
        for container in self.client.containers.list(all=True, filters={"label": label}):
            if spare_own and container.labels.get(INSTANCE_LABEL) == self.instance:
                continue
            try:
                container.remove(force=True)
                count += 1
            except docker.errors.NotFound:
                pass
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                log.warning("could not remove %s container %s: %s", what, container.short_id, exc)
        return count

    async def close(self) -> None:
        self._closing = True  # no donor made, no removal handed over for later: the sweep below takes what is left
        if self._removing_leftovers is not None:
            self._removing_leftovers.cancel()
            await asyncio.gather(self._removing_leftovers, return_exceptions=True)  # (a removal under way ends first)
        if self.outage.down_since is None:  # (the engine is not answering: they would wait for the SDK's 60 s)
            await asyncio.gather(*self._creating, return_exceptions=True)  # a cancelled launch's create ends, then goes
        await asyncio.gather(*self._discarding, return_exceptions=True)
        for attached in self._attached.values():  # the agent removed its containers; any left end here
            attached.close()
        self._attached.clear()
        if self._cleaning is not None:
            await asyncio.gather(self._cleaning, return_exceptions=True)  # a removal under way ends first
        if self.prefork is not None:
            await asyncio.gather(*self._discarding, return_exceptions=True)
            if self._refilling is not None:  # not cancelled: a donor being made in a thread would be left behind
                await asyncio.gather(self._refilling, return_exceptions=True)
            donors, self.prefork.free = self.prefork.all(), []
            await asyncio.gather(*(asyncio.to_thread(PreforkPool.remove, self.client, d) for d in donors))
        if self.client is not None:
            await self._remove_own()

    async def _remove_own(self) -> None:
        """Remove what this process made and still finds (labelled with its own instance: never a neighbour's):
        containers the agent could not remove while the engine failed, or made by a launch cut short."""
        import docker.errors
        import requests.exceptions

        try:
            removed = await self._ask_engine("remove left", functools.partial(self._remove_labelled, f"{INSTANCE_LABEL}={self.instance}", "left"))
        except (docker.errors.DockerException, requests.exceptions.RequestException, ContainerEngineUnavailable) as exc:
            log.warning("could not look for containers of this runner left at its stop: %s; those it made carry the "
                        "label %s=%s", exc, INSTANCE_LABEL, self.instance)
            return
        if removed:
            log.info("removed %d container(s) of this runner left at its stop", removed)
        for client in (self.client, self.pull_client, self.ping_client):
            if client is not None:
                await asyncio.to_thread(client.close)

    def _ping_engine(self) -> asyncio.Future[None]:
        """A ping of the engine in a thread of its own (a hung engine may hold every thread of the loop's executor);
        fails when the engine did not answer within `PING_TIMEOUT_S`."""

        def ping() -> None:
            if not self.ping_client.ping():
                raise ConnectionError("the engine's answer to a ping was not OK")

        pinged = in_daemon_thread("engine ping", ping)
        pinged.add_done_callback(left_alone)
        return pinged

    # --- containers -------------------------------------------------------------------------
    def engine_path(self, iofs_dir: str) -> str:
        """``iofs_dir`` as the engine sees it: a runner in a container has FN_IOFS_PATH mounted from the
        host's FN_IOFS_DOCKER_PATH, and a bind mount names the host's path."""
        host_root = self.config.iofs_docker_path
        if not host_root:
            return iofs_dir
        return os.path.join(host_root, os.path.relpath(iofs_dir, self.config.iofs_path))

    def container_options(self, call: Call, iofs_dir: str, env: dict[str, str], donor: str | None = None) -> dict[str, Any]:
        """The ``containers.create()`` kwargs for a hot container, before plugins change them; with
        ``donor``, in that prefork donor's network namespace."""
        from docker.types import Mount, Ulimit

        cfg = self.config
        options: dict[str, Any] = {
            "image": call.image,
            "name": f"fn-{call.app_id[:20] or 'app'}-{secrets.token_hex(6)}",
            "environment": dict(env),
            "labels": {CLASSIFIER_LABEL: self.label_tag, INSTANCE_LABEL: self.instance,
                       "fn-app-id": call.app_id, "fn-fn-id": call.fn_id},
            "read_only": not cfg.disable_readonly_rootfs,
            "init": True,
            "log_config": log_config(call),
            "pids_limit": cfg.max_pids or None,
            "ulimits": [  # 0: the engine's own (as Fn leaves an unset one); a limit of 0 files would start nothing
                Ulimit(name=name, soft=limit, hard=limit) for name, limit in (
                    ("nofile", cfg.max_open_files), ("memlock", cfg.max_locked_memory),
                    ("sigpending", cfg.max_pending_signals), ("msgqueue", cfg.max_message_queue),
                ) if limit
            ],
            "mounts": [Mount(target=IOFS_MOUNT, source=self.engine_path(iofs_dir), type="bind")],
        }
        if call.memory > 0:  # swap disabled: memory == memory+swap
            options["mem_limit"] = options["memswap_limit"] = call.memory * MB
            options["mem_swappiness"] = 0
        if call.cpus > 0:
            options["cpu_quota"], options["cpu_period"] = call.cpus * 100, 100000
        if cfg.max_fs_size_mb:
            options["storage_opt"] = {"size": f"{cfg.max_fs_size_mb}M"}
        if options["read_only"] or call.tmpfs_size:
            tmpfs = [f"size={call.tmpfs_size}m"] if call.tmpfs_size else []
            if cfg.max_tmpfs_inodes:
                tmpfs.append(f"nr_inodes={cfg.max_tmpfs_inodes}")
            options["tmpfs"] = {"/tmp": ",".join(tmpfs)}
        if donor is not None:  # its network, and its hostname: Docker sets neither for a joined namespace
            options["network_mode"] = f"container:{donor}"
        elif self._network_use:
            network = min(self._network_use, key=self._network_use.__getitem__)
            options["network"] = network
        else:
            options["hostname"] = socket.gethostname()
        if not cfg.disable_unprivileged_containers:
            options["user"] = "1000:1000"
            options["cap_drop"] = ["ALL"]
            options["security_opt"] = ["no-new-privileges"]
        return options

    async def launch(
        self, call: Call, extensions: dict[str, str], iofs_dir: str, env: dict[str, str], output: OutputSink | None = None
    ) -> str:
        pool = self.prefork
        donor = pool.take() if pool is not None else None
        if donor is None:
            return await self._launch(call, extensions, iofs_dir, env, output, None)
        assert pool is not None
        try:
            container_id = await self._launch(call, extensions, iofs_dir, env, output, donor)
        except ContainerEngineUnavailable:
            pool.give_back(donor)  # nobody can tell whether it runs now; a launch after the outage finds out
            raise
        except APIError:
            if await asyncio.to_thread(self._running, donor):
                pool.give_back(donor)
                raise
            # the donor died (killed by hand, say): it leaves the pool, and this container gets a network of its own
            log.warning("prefork donor %s is not running: replaced", donor[:12])
            pool.drop(donor)
            self._discard_donor(donor)
            return await self._launch(call, extensions, iofs_dir, env, output, None)
        except BaseException:
            pool.give_back(donor)
            raise
        pool.lend(donor, container_id)
        return container_id

    def _running(self, container_id: str) -> bool:
        import docker.errors

        try:
            return bool(self.client.api.inspect_container(container_id)["State"].get("Running"))
        except docker.errors.NotFound:
            return False

    @staticmethod
    def _with_our_labels(labels: Any, ours: dict[str, str]) -> Any:
        """A plugin may add labels, or replace the dict, but the ones that say the container is ours stay: without
        them a runner started after a crash would not find it to remove it. A label the docker SDK does not take
        (not a dict or list of names) is left as it is, for the create to refuse naming the plugin."""
        if isinstance(labels, (list, tuple)):
            labels = dict.fromkeys(labels, "")
        if not isinstance(labels, dict):
            return labels
        owned = {key: ours[key] for key in (CLASSIFIER_LABEL, INSTANCE_LABEL)}
        return {**ours, **labels, **owned}

    def _discard_donor(self, donor: str) -> None:
        """Remove a donor no container may join any more, and make its replacement (both in the background)."""
        removal = asyncio.ensure_future(asyncio.to_thread(PreforkPool.remove, self.client, donor))
        self._discarding.add(removal)
        removal.add_done_callback(self._discarding.discard)
        removal.add_done_callback(lambda done: self._refill_soon())

    async def _launch(
        self, call: Call, extensions: dict[str, str], iofs_dir: str, env: dict[str, str], output: OutputSink | None, donor: str | None
    ) -> str:
        options = self.container_options(call, iofs_dir, env, donor)
        ours = dict(options)
        our_labels = dict(options["labels"])  # a plugin may change the dict in place
        # a plugin's APIError fails the call as it is; anything else is a 500 naming the plugin (its text stays in the log)
        run_failing_call(self.hook.modify_container_options, call=call, extensions=dict(extensions), options=options)
        labels = self._with_our_labels(options.get("labels"), our_labels)
        if labels != options.get("labels"):  # (unchanged, it stays the object it was: not named as a plugin's option)
            options["labels"] = labels
        network = options.get("network")
        if network in self._network_use:
            self._network_use[network] += 1  # until the container is removed (Fn counts the same)
        launched = False
        try:
            wanted = output is not None
            try:
                try:
                    container_id, image, sock = await self._create_and_start_kept(options, wanted)
                except _ImageMissing:
                    await self._pull(options["image"], extensions.get(REGISTRY_TOKEN_EXTENSION))
                    container_id, image, sock = await self._create_and_start_kept(options, wanted)
            except _OptionsRefused as exc:
                raise self._options_refused(exc, ours, options) from None
            watch = _ExitWatch(output)
            if sock is None:
                watch.close()
                self._attached[container_id] = _Attachment(None, watch)
            else:
                try:
                    self._attached[container_id] = _Attachment(await read_output(sock, watch), watch)
                except BaseException:
                    sock.close()
                    self._discard_container(container_id)  # started, and nobody would know of it
                    raise
            if self.images is not None:
                self._container_images[container_id] = image.id
                self.images.busy(image.id, int(image.attrs.get("Size") or 0), image.tags)
                self._clean_images()
            if network in self._network_use:
                self._container_networks[container_id] = network
            launched = True
            return container_id
        finally:
            if not launched and network in self._network_use:
                self._network_use[network] -= 1

    def _options_refused(self, exc: _OptionsRefused, ours: dict[str, Any], options: dict[str, Any]) -> APIError:
        """The docker SDK refused the create() options: name the ones plugins set, and the plugins, in the error."""
        theirs = sorted(k for k in options if k not in ours or options[k] is not ours[k])
        plugins = sorted({impl.plugin_name for impl in self.hook.modify_container_options.get_hookimpls()})
        said = f" (set by modify_container_options of {', '.join(plugins)}: {', '.join(theirs)})" if theirs else ""
        log.error("the docker SDK refused a container's options%s: %s", said, exc)
        return APIError(f"could not create the container: the docker SDK refused its options: {exc}{said}", status=500)

    async def _create_and_start_kept(self, options: dict[str, Any], output_wanted: bool) -> tuple[str, Any, socket.socket | None]:
        """`_create_and_start` in a thread of its own that outlives a cancelled launch (a runner's stop cancels
        those): the container it then makes is removed as it is made, and close() waits for it, so none is left
        running. An engine that does not answer fails it with the NACK, and the next ones without asking
        (`EngineOutage`). Not in the loop's executor: creates stuck on a hung engine would hold every thread of it
        for the SDK's 60 s, and all else the node does in threads (its /metrics, plugins' work) would wait."""
        async with self._launch_places:
            await self.outage.admit()  # once it has its place: the engine may have been found down meanwhile
            made = in_daemon_thread("create container", functools.partial(self._create_and_start, options, output_wanted))
            self._creating.add(made)
            made.add_done_callback(self._creating.discard)
            return await self._engine_answer(made, left=self._remove_abandoned)

    async def _ask_engine(self, name: str, ask: Callable[[], T]) -> T:
        """``ask()`` in a thread of its own (one left on a hung engine does not hold up the runner's exit), through
        the engine's outage watch: refused at once while the engine is down, and failed (`ContainerEngineUnavailable`)
        when it does not answer, within ~7 s when it hangs."""
        await self.outage.admit()
        return await self._engine_answer(in_daemon_thread(name, ask))

    async def _engine_answer(self, asked: asyncio.Future[T], left: Callable[[asyncio.Future[T]], None] | None = None) -> T:
        """The engine's answer to what a thread ``asked`` (after `EngineOutage.admit`); ``left`` gets the thread's
        future when the wait for it ends first (cancelled, or the engine hung): what it still makes is its to undo."""
        try:
            answer = await self.outage.answer(asked)
        except asyncio.CancelledError:
            self.outage.abandoned()
            asked.add_done_callback(left or left_alone)
            raise
        except BaseException as exc:
            shortage = runner_out_of(exc, "reach the Docker engine")
            if shortage is not None:  # the runner's want: nothing says the engine is down
                self.outage.abandoned()
                raise shortage from None
            if engine_unreachable(exc):
                if not asked.done():  # hung: the thread goes on alone
                    asked.add_done_callback(left or left_alone)
                raise self.outage.failed(exc) from None
            self.outage.answered()  # with an error about this container, which is the call's
            raise
        self.outage.answered()
        return answer

    def _remove_abandoned(self, made: asyncio.Future[tuple[str, Any, socket.socket | None]]) -> None:
        if made.cancelled() or made.exception() is not None:
            return  # nothing was made (or the create's own clean-up ran)
        container_id, _, sock = made.result()
        if sock is not None:
            sock.close()
        self._discard_container(container_id)

    def _discard_container(self, container_id: str) -> None:
        """Remove, in the background, a container a launch made and will not hand over; one the engine does not
        remove now is tried again (`_remove_later`)."""
        removal = asyncio.ensure_future(self.remove(container_id))
        self._discarding.add(removal)
        removal.add_done_callback(self._discarding.discard)

        def refused(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self._remove_later(container_id, done.exception())

        removal.add_done_callback(refused)

    def _remove_later(self, container_id: str, why: BaseException | None) -> None:
        """A container a launch made could not be removed (the engine or the runner short of something): it is tried
        again, less often the longer it fails, until it is gone or the runner stops (whose sweep removes it)."""
        if self._closing or container_id in self.leftovers:
            return
        log.warning("could not remove container %s, made by a launch that did not hand it over (%s): trying again",
                    container_id[:12], why)
        self.leftovers.add(container_id)
        if self._removing_leftovers is None or self._removing_leftovers.done():
            self._removing_leftovers = asyncio.ensure_future(self._remove_leftovers())

    async def _remove_leftovers(self) -> None:
        for pause in itertools.chain(REMOVE_RETRY_S, itertools.repeat(REMOVE_RETRY_S[-1])):
            await asyncio.sleep(pause)
            for container_id in sorted(self.leftovers):
                try:
                    await self.remove(container_id)
                except Exception as exc:  # still refused: the next round tries again
                    log.debug("container %s left by a launch: still not removed (%s)", container_id[:12], exc)
                    continue
                self.leftovers.discard(container_id)
                log.info("removed container %s, left by a launch, at last", container_id[:12])
            if not self.leftovers:
                return

    def _undo_create(self, container_id: str) -> None:
        """In a launch's thread: remove the container it made before failing; if that fails too, the loop tries
        again later (a container nobody knows would otherwise run until the runner stops)."""
        try:
            self._remove(container_id)
        except Exception as exc:
            try:
                assert self._loop is not None  # set by start(), before any launch
                self._loop.call_soon_threadsafe(self._remove_later, container_id, exc)
            except RuntimeError:  # the loop has closed: the runner is gone, and its stop's sweep has run
                log.warning("could not remove container %s, made by a launch that failed: %s; it carries the label %s=%s",
                            container_id[:12], exc, INSTANCE_LABEL, self.instance)

    def _create_and_start(self, options: dict[str, Any], output_wanted: bool) -> tuple[str, Any, socket.socket | None]:
        """Create and start the container, and attach its stdout/stderr socket: before the start when its output
        is wanted (no first byte missed), else after it, off the create -> start path (the stream is then only for
        its end). None for the socket: the container stopped before we attached. A container made by a launch that
        then fails is removed (`_undo_create`)."""
        import docker.errors

        try:
            image = self.client.images.get(options["image"])
        except docker.errors.ImageNotFound:
            raise _ImageMissing() from None
        if (image.attrs.get("Config") or {}).get("Volumes") and not self.config.image_enable_volume:
            raise ImageWithVolume()
        try:
            container = self.client.containers.create(**options)
        except (TypeError, docker.errors.InvalidArgument) as exc:  # an option the SDK does not know, or a bad value
            raise _OptionsRefused(str(exc)) from None
        except docker.errors.ImageNotFound:
            raise ServerTooBusy() from None  # Fn: the image vanished; another runner may have it
        except docker.errors.APIError as exc:
            raise engine_refusal("create the container", str(exc.explanation or exc)) from None
        try:
            return container.id, image, self._start_and_attach(container, options, output_wanted)
        except BaseException:
            self._undo_create(container.id)
            raise

    def _start_and_attach(self, container: Any, options: dict[str, Any], output_wanted: bool) -> socket.socket | None:
        import docker.errors

        sock = self._attach(container) if output_wanted else None
        started = False
        try:
            container.start()
            started = True
        except docker.errors.APIError as exc:
            reason = str(exc.explanation or exc)
            if (options.get("log_config") or {}).get("Type") == "syslog" and "logging driver" in reason:
                log.warning("syslog of app %s unavailable: %s", options["labels"].get("fn-app-id"), reason)
                raise SyslogUnavailable() from None
            raise engine_refusal("start the container", reason) from None
        finally:
            if not started and sock is not None:
                sock.close()
        if sock is None:
            sock = self._attach(container)
            # a stream attached to a container that has stopped already never ends: ask once, now that it is attached
            try:
                running = self.client.api.inspect_container(container.id)["State"].get("Running")
            except BaseException:
                sock.close()
                raise
            if not running:
                sock.close()
                return None
        return sock

    def _attach(self, container: Any) -> socket.socket:
        try:
            return attach_socket(self.client, container.id)
        except Exception as exc:
            raise runner_out_of(exc, "attach to a container") or APIError(f"could not attach to the container's output: {exc}", status=500) from None

    async def _pull(self, image: str, registry_token: str | None) -> None:
        """Pull ``image`` once however many launches need it; each waits at most FN_HOT_PULL_TIMEOUT_MSECS (504).

        A pull that outlives its waiters runs on (bounded by the pull client's read timeout): the
        next call may find the image there.
        """
        pull = self._pulls.get(image)
        if pull is None:
            pull = self._pulls[image] = in_daemon_thread(f"pull {image}", functools.partial(self._pull_image, image, registry_token))
            pull.add_done_callback(lambda done: self._pulls.pop(image, None) if self._pulls.get(image) is done else None)
            pull.add_done_callback(left_alone)  # also when every waiter has timed out
        try:
            async with asyncio.timeout(self.config.hot_pull_timeout_msecs / 1000):  # not wait_for, which on 3.11 can drop a cancel
                await asyncio.shield(pull)
        except TimeoutError:
            log.warning("pull of image %s timed out after %d ms", image, self.config.hot_pull_timeout_msecs)
            raise DockerPullTimeout() from None

    def _pull_image(self, image: str, registry_token: str | None) -> None:
        import docker.errors
        import requests.exceptions

        auth = {"registrytoken": registry_token} if registry_token else self._registry_auth(image)
        log.info("pulling image %s", image)
        try:
            self.pull_client.images.pull(image, auth_config=auth)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            reason = str((exc.explanation if isinstance(exc, docker.errors.APIError) else exc) or exc)
            if disk_full(reason):  # the runner's want, not the image's: logged as its shortage
                raise engine_refusal(f"pull image {image}", reason) from None
            log.warning("pull of image %s failed: %s", image, reason)
            raise APIError(
                f"image {image!r} is not on this runner and could not be pulled: {pull_failure(reason)}",
                status=502,
                user_error=True,
            ) from None

    def _registry_auth(self, image: str) -> dict[str, Any] | None:
        """FN_DOCKER_AUTH's entry for the image's registry host; None lets the SDK use ~/.docker/config.json."""
        import docker.auth
        import docker.errors

        if self.registry_auths is None:
            return None
        try:
            registry, _ = docker.auth.resolve_repository_name(image)
        except docker.errors.InvalidRepository:
            return None  # the pull itself then says what is wrong with the name
        return self.registry_auths.resolve_authconfig(registry)

    async def exit_status(self, container_id: str, wait_s: float) -> ExitStatus | None:
        # asked again every EXIT_POLL_S, not a blocking `docker wait`: a thread is held for one inspect at a time,
        # never for the whole wait (containers that broke at once must not hold up other functions' launches)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            state = await asyncio.to_thread(self._container_state, container_id)
            if state is None:
                return None
            if not state.get("Running"):
                return ExitStatus(code=int(state.get("ExitCode", -1)), oom_killed=bool(state.get("OOMKilled")))
            if loop.time() + EXIT_POLL_S > deadline:
                return None  # still running
            await asyncio.sleep(EXIT_POLL_S)

    def _container_state(self, container_id: str) -> dict[str, Any] | None:
        """The engine's ``State`` of the container; None when it is gone or the engine cannot say."""
        import docker.errors
        import requests.exceptions

        try:
            return self.client.api.inspect_container(container_id)["State"]
        except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
            return None  # the engine does not answer
        except docker.errors.NotFound:
            return None  # removed (by us, or by hand): nobody can say how it ended
        except docker.errors.APIError as exc:
            log.warning("Docker would not say how container %s ended: %s", container_id[:12], exc.explanation or exc)
            return None

    async def wait_exit(self, container_id: str) -> ExitStatus | None:
        attached = self._attached.get(container_id)
        if attached is None:
            return None  # not launched here, or already let go: nothing to watch
        try:
            await asyncio.shield(attached.watch.ended)
        except asyncio.CancelledError:
            # the container is ready: its stream is only kept for output someone wants (Fn's pure runner drops it)
            if attached.watch.sink is None and self._attached.get(container_id) is attached:
                del self._attached[container_id]
                attached.close()
            raise
        return await self.exit_status(container_id, wait_s=2.0)

    async def remove(self, container_id: str) -> None:
        attached = self._attached.pop(container_id, None)
        if attached is not None:
            attached.close()
        removed = False
        try:
            await self._ask_engine(f"remove {container_id[:12]}", functools.partial(self._remove, container_id))
            removed = True
        finally:  # even when the engine failed: this container counts no more as a user of its image or network
            network = self._container_networks.pop(container_id, None)
            if network is not None:
                self._network_use[network] -= 1
            image_id = self._container_images.pop(container_id, None)
            if self.images is not None and image_id is not None:
                self.images.free(image_id)
                self._clean_images()
            if self.prefork is not None:
                # its donor is free again; replaced instead with use-once, or if the container may still be there
                used = self.prefork.returned(container_id, reusable=removed)
                if used is not None:
                    self._discard_donor(used)

    def _remove(self, container_id: str) -> None:
        import docker.errors

        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # "removal already in progress" is fine
                raise

    # --- image cache (FN_IMAGE_CLEAN_MAX_SIZE) ---------------------------------------------------
    def _clean_images(self) -> None:
        """Remove what the image budget says, in the background; one clean-up at a time (the next one
        runs when a container goes, and sees what this one left)."""
        assert self.images is not None
        if self._cleaning is not None and not self._cleaning.done():
            return
        victims = self.images.victims()
        if victims:
            self._cleaning = asyncio.ensure_future(self._remove_images(victims))

    async def _remove_images(self, victims: list[CachedImage]) -> None:
        assert self.images is not None
        for image in victims:
            if image.in_use:  # a launch took it again meanwhile
                continue
            removed = await asyncio.to_thread(self._remove_image, image)
            if removed:
                self.images.removed(image.id)
                log.info("removed image %s (%d MB) to keep the runner's images under %d MB", ", ".join(image.tags) or image.id[:19],
                         image.size // MB, self.images.max_size // MB)
            else:
                self.images.kept(image.id)

    def _remove_image(self, image: CachedImage) -> bool:
        """Untag it (the last untag deletes it); never forced: an image a container uses stays. False: kept."""
        import docker.errors

        try:
            for ref in image.tags or (image.id,):
                self.client.images.remove(ref, noprune=False)
        except docker.errors.NotFound:
            return True  # removed by someone else: gone all the same
        except docker.errors.APIError as exc:
            log.debug("image %s kept: %s", image.id[:19], exc.explanation or exc)
            return False
        return True

    async def pause(self, container_id: str) -> None:
        await asyncio.to_thread(self.client.api.pause, container_id)

    async def unpause(self, container_id: str) -> None:
        await asyncio.to_thread(self.client.api.unpause, container_id)


def _docker_driver(*, config: Any, hook: Any) -> DockerDriver:
    return DockerDriver(config, hook)


@hookimpl
def register_drivers():
    return [Driver(name="docker", factory=_docker_driver, description="Docker Engine: hot containers over a unix socket")]
