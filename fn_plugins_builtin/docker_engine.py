"""How the Docker driver talks to the Docker Engine: the threads its blocking SDK runs in, the bounds on its
requests, the registry credentials it sends, and what the engine's refusals mean for a call.

None of this is on the warm call path (`fn_plugins_builtin.driver_docker` module doc).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from fn_core.errors import APIError, ConfigError, RunnerOutOfResources

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTH_FORMAT = 'expected {"auths": {"<registry host>": {"auth": "<base64 of user:password>"}}}'
#: how the engine says that the disk it keeps containers and images on is full (Go's texts of ENOSPC and EDQUOT)
DISK_FULL = ("no space left on device", "disk quota exceeded")


def registry_auths(docker_auth: str) -> Any:
    """Parse FN_DOCKER_AUTH (docker's config.json, or only its ``auths`` map) once, at start.

    Entries are matched by registry host as the docker CLI matches them (``https://index.docker.io/v1/``
    and ``docker.io`` are the same). Errors never quote the text: it holds passwords.
    """
    import docker.auth
    import docker.errors

    if not docker_auth:
        return None
    try:
        auths = docker.auth.AuthConfig.load_config(None, json.loads(docker_auth))
    except (ValueError, TypeError, AttributeError, docker.errors.InvalidConfigFile):
        raise ConfigError(f"docker_auth (FN_DOCKER_AUTH): not docker auth JSON; {AUTH_FORMAT}") from None
    if not auths.auths:
        raise ConfigError(f"docker_auth (FN_DOCKER_AUTH): no registry in it; {AUTH_FORMAT}")
    return auths


def left_alone(asked: asyncio.Future[Any]) -> None:
    """The end of an engine call nobody may wait for any more (a pull past its waiters' timeouts, a ping, a call on a
    hung engine): retrieved, so its error is a debug line, not asyncio's warning."""
    if not asked.cancelled() and asked.exception() is not None:
        log.debug("an engine call nobody waited for ended with %r", asked.exception())


def bound_every_request(api: Any, timeout_s: float) -> None:
    """Give each request of the docker SDK client ``api`` that asks for no timeout at all a socket timeout of
    ``timeout_s``: its pull asks for none (``timeout=None``, over the client's own), so a registry that stops
    answering held the pull's thread until the engine gave up, and every launch of the image joined that pull."""

    def bounded(send: Callable[..., Any], request: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout_s
        return send(request, **kwargs)

    for adapter in api.adapters.values():
        adapter.send = functools.partial(bounded, adapter.send)


def in_daemon_thread(name: str, work: Callable[[], T]) -> asyncio.Future[T]:
    """``work()`` in a thread of its own that the process does not wait for at exit (not the loop's executor, whose
    threads the end of `asyncio.run` joins): a pull or a removal that hangs must not hold up the runner's stop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(cast(T, result))  # None only with an error
        else:
            done.set_exception(error)

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


#: how an engine says it could not reach a registry (its message then names resolvers, addresses, proxies)
_UNREACHED = ("dial tcp", "lookup ", "no such host", "connection refused", "i/o timeout", "TLS handshake timeout",
              "Client.Timeout", "proxyconnect")


def storage_size_unsupported(info: dict[str, Any]) -> str:
    """Why the engine (its ``docker info``) cannot limit a container's writable layer, or "" when it may.

    overlay2 (and vfs) limit it only on xfs mounted with ``pquota``; the backing filesystem is in the engine's
    info, the mount option is not, so on xfs a create still may refuse it (at the first call)."""
    driver = info.get("Driver", "")
    status = dict(info.get("DriverStatus") or [])
    backing = status.get("Backing Filesystem", "")
    if driver in ("overlay2", "vfs") and backing and backing != "xfs":
        return (f"Docker's {driver} storage on {backing} cannot limit a container's size "
                "(it needs xfs mounted with pquota; devicemapper, btrfs and zfs can too)")
    return ""


def disk_full(reason: str) -> bool:
    return any(marker in reason.lower() for marker in DISK_FULL)


def engine_refusal(doing: str, reason: str) -> APIError:
    """The engine's refusal to ``doing``: its disk full is this runner's want, not the call's
    (`RunnerOutOfResources`: a NACK, another runner's engine may have room); anything else a 500 that says what."""
    if disk_full(reason):
        return RunnerOutOfResources(f"the Docker engine's disk is full: it could not {doing}: {reason}")
    return APIError(f"could not {doing}: {reason}", status=500)


def pull_failure(reason: str) -> str:
    """What a client is told of a failed pull: the registry's own answer (denied, no such manifest), or only that
    it could not be reached; how it was sought (the engine's resolver, addresses) is the operator's, in the log."""
    if any(marker in reason for marker in _UNREACHED):
        return "the registry could not be reached"
    return reason
