"""fn-core plugin: images only from the registries an operator allows, apps' logs only to its log hosts.

An fn's image makes the runners' Docker engine pull from whatever host the image names, and an app's ``syslog_url``
makes it connect from the host to whatever address the URL names: on a platform that runs tenants' code, both are
the operator's to allow. API: `validate_fn` / `validate_app` refuse an fn or app outside the policy when saved
(400, nothing stored, the allowed ones named). LB: `override_call` refuses, before placement, a call of one saved
before the policy (or before the plugin was installed): nothing is pulled and no container started.

The settings live in a `Policy` that `configure` registers with each plugin manager, not at module level: tests and
`fn-core serve` build several managers in one process, each with its config.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

from fn_core import APIError, hookimpl
from fn_core.errors import ConfigError

__version__ = "0.1.0"

SETTINGS = ("registries", "syslog_hosts")
DOCKER_HUB = "docker.io"
SYSLOG_PORT = 514  # Docker's syslog driver's default


def image_name(image: str) -> str:
    """``image`` as Docker resolves it, host first, with no tag or digest: ``python:3.12`` is
    ``docker.io/library/python``, ``me/fn`` is ``docker.io/me/fn``, ``localhost:5000/fn:1`` is ``localhost:5000/fn``."""
    name = image.partition("@")[0]  # a digest
    head, slash, last = name.rpartition("/")
    name = f"{head}{slash}{last.partition(':')[0]}"  # a tag: only in the last component (a host may have a port)
    first, slash, rest = name.partition("/")
    host, path = (first.lower(), rest) if slash and _is_host(first) else (DOCKER_HUB, name)
    if host == "index.docker.io":
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in path:  # an official image: docker.io/python is docker.io/library/python
        path = f"library/{path}"
    return f"{host}/{path}"


def registry_prefix(entry: str) -> str:
    """A ``registries`` entry as the start of the image names it allows: a host alone allows all of its images
    (``docker.io``: all of Docker Hub, official images too), a host and path those under it (``docker.io/library``:
    the official images only)."""
    host, slash, path = entry.strip("/").partition("/")
    host = host.lower()
    return f"{DOCKER_HUB if host == 'index.docker.io' else host}{slash}{path}"


def _log_host_setting(entry: str) -> str:
    """A ``syslog_hosts`` entry, ``host`` or ``host:port``, as `log_host` gives an app's URL's; a ConfigError naming
    the setting for one that is neither (a URL, a port alone, a port that is no port)."""
    try:
        host = "" if "/" in entry else log_host(f"tcp://{entry}")
    except ValueError:
        host = ""
    if not host or host.startswith(":"):
        raise ConfigError(f"[plugins.image-policy] syslog_hosts: {entry!r} is no host or host:port "
                          f"(e.g. logs.example.com:514; the scheme is the app's)")
    return host


def _is_host(component: str) -> bool:
    """Docker's rule (distribution/reference's splitDockerDomain): the first component of a name is a registry host
    if it has a dot or a port, is localhost, or is not all lower case (EVIL/fn is pulled from the host EVIL)."""
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def log_host(url: str) -> str:
    """The ``host:port`` a syslog URL sends to (Docker's default port when it gives none), lower case; ValueError for
    a port that is no port."""
    parts = urlsplit(url.strip())
    return f"{(parts.hostname or '').lower()}:{SYSLOG_PORT if parts.port is None else parts.port}"


@attrs.frozen(eq=False)  # a plugin object: the manager tells its plugins apart by identity, not by value
class Policy:
    """One plugin manager's ``[plugins.image-policy]``: None for a check that is off."""

    registries: tuple[str, ...] | None = None  # image name prefixes, at a "/" (a host, or a host and path)
    syslog_hosts: tuple[str, ...] | None = None  # host:port

    @classmethod
    def from_settings(cls, own: dict) -> Policy:
        """The ``[plugins.image-policy]`` table, checked; a bad key or value stops start-up naming it."""
        registries = _strings(own, "registries")
        for entry in registries or ():
            if not _is_host(entry.partition("/")[0]):
                raise ConfigError(f"[plugins.image-policy] registries: {entry!r} names no registry host: give it as "
                                  f"Docker resolves it, e.g. {DOCKER_HUB}/{entry} or registry.example.com/{entry}")
        hosts = _strings(own, "syslog_hosts")
        return cls(
            registries=None if registries is None else tuple(registry_prefix(entry) for entry in registries),
            syslog_hosts=None if hosts is None else tuple(_log_host_setting(host) for host in hosts),
        )

    @hookimpl
    def validate_app(self, app):
        self.check_syslog(app.syslog_url)

    @hookimpl
    def validate_fn(self, fn):
        self.check_image(fn.image)

    @hookimpl
    def override_call(self, call, extensions):
        self.check_image(call.image)
        self.check_syslog(call.syslog_url)

    def check_image(self, image: str) -> None:
        if self.registries is None:
            return
        name = image_name(image)
        if not any(name.startswith(entry + "/") for entry in self.registries):
            raise APIError(f"image {image} ({name}) is not from a registry this platform allows: "
                           f"{', '.join(self.registries)}", status=400)

    def check_syslog(self, syslog_url: str) -> None:
        if self.syslog_hosts is None or not syslog_url:
            return
        allowed = ", ".join(self.syslog_hosts) or "none (no syslog_url)"
        for url in syslog_url.split(","):
            try:
                host = log_host(url)
            except ValueError:  # urlsplit's port out of range or not a number
                raise APIError(f"syslog_url {url.strip()} has no valid port; the log hosts this platform allows: "
                               f"{allowed}", status=400) from None
            if host not in self.syslog_hosts:
                raise APIError(f"syslog_url {url.strip()} sends to {host}, not a log host this platform allows: "
                               f"{allowed}", status=400)


@hookimpl
def configure(config, plugin_manager):
    """With neither setting, nothing is registered: an `override_call` that checks nothing would still cost every
    call (the LB's call template is used as is only when no plugin implements that hook)."""
    policy = Policy.from_settings(config.plugin_settings("image-policy", known=SETTINGS))
    if policy.registries is not None or policy.syslog_hosts is not None:
        plugin_manager.register(policy, name="image-policy:policy")


def _strings(table: dict, key: str) -> list[str] | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)):
        raise ConfigError(f"[plugins.image-policy] {key} must be a list of non-empty strings, got {value!r}")
    return value
