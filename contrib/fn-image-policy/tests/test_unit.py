"""Fast checks of the plugin's logic through a real plugin manager (no node)."""

import pytest

import fn_image_policy
from fn_core import APIError
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.models import App, Call, Fn
from fn_core.plugins import get_plugin_manager
from fn_core.testing import lb_prepare


def manager(tmp_path, toml=""):
    path = tmp_path / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env={}), load_entrypoints=False, extra_plugins=[("image-policy", fn_image_policy)])


@pytest.mark.parametrize(("image", "name"), [
    ("python", "docker.io/library/python"),
    ("python:3.12-slim", "docker.io/library/python"),
    ("me/fn:1", "docker.io/me/fn"),
    ("docker.io/me/fn", "docker.io/me/fn"),
    ("index.docker.io/me/fn:2", "docker.io/me/fn"),
    ("Registry.Example.com/team/fn:1", "registry.example.com/team/fn"),
    ("localhost:5000/fn:1", "localhost:5000/fn"),
    ("localhost/fn", "localhost/fn"),
    ("registry.example.com:8443/a/b/c@sha256:" + "0" * 64, "registry.example.com:8443/a/b/c"),
    ("me/fn:1@sha256:" + "0" * 64, "docker.io/me/fn"),
    ("docker.io/python:3.12", "docker.io/library/python"),
    ("index.docker.io/python", "docker.io/library/python"),
    ("EVIL/fn:1", "evil/fn"),  # not all lower case: a host, as newer engines read it (older ones refuse the name)
    ("LOCALHOST/fn", "localhost/fn"),
])
def test_an_image_is_named_as_docker_resolves_it(image, name):
    assert fn_image_policy.image_name(image) == name


def test_images_from_other_registries_are_refused_when_saved_and_at_a_call(tmp_path):
    pm = manager(tmp_path, '[plugins.image-policy]\nregistries = ["registry.example.com", "docker.io/library", "docker.io/team"]\n')
    for image in ("registry.example.com/any/fn:1", "python:3.12", "team/fn", "docker.io/team/fn:2"):
        pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image=image))
        lb_prepare(pm, Call(id="c", image=image))
    message = ("image {} ({}) is not from a registry this platform allows: registry.example.com, docker.io/library, "
               "docker.io/team")
    for image, name in [("evil.example.com/fn:1", "evil.example.com/fn"), ("teammate/fn", "docker.io/teammate/fn"),
                        ("registry.example.com.evil.io/fn", "registry.example.com.evil.io/fn"), ("me/python", "docker.io/me/python"),
                        ("TEAM/fn", "team/fn")]:
        for check in (lambda: pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image=image)),  # noqa: B023
                      lambda: lb_prepare(pm, Call(id="c", image=image))):  # noqa: B023
            with pytest.raises(APIError) as refused:
                check()
            assert (refused.value.status, refused.value.message) == (400, message.format(image, name))


def test_a_registry_host_alone_allows_all_its_images(tmp_path):
    """`docker.io` is all of Docker Hub (`docker.io/library` its official images only); a trailing slash is no path."""
    pm = manager(tmp_path, '[plugins.image-policy]\nregistries = ["Index.Docker.io", "registry.example.com/"]\n')
    for image in ("me/fn:1", "python:3.12", "docker.io/team/fn", "registry.example.com/any/fn:1"):
        pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image=image))
    with pytest.raises(APIError, match="not from a registry this platform allows: docker.io, registry.example.com$"):
        pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image="quay.io/me/fn"))


def test_syslog_urls_to_other_hosts_are_refused_and_an_empty_list_allows_none(tmp_path):
    pm = manager(tmp_path, '[plugins.image-policy]\nsyslog_hosts = ["logs.example.com:514", "Audit.Example.com:6514"]\n')
    for url in ("tcp://logs.example.com:514", "udp://LOGS.example.com", "tls://audit.example.com:6514,tcp://logs.example.com", ""):
        pm.hook.validate_app(app=App(name="a", syslog_url=url))
        lb_prepare(pm, Call(id="c", image="x", syslog_url=url))
    with pytest.raises(APIError) as refused:
        pm.hook.validate_app(app=App(name="a", syslog_url="tcp://logs.example.com:514,tcp://10.0.0.5:514"))
    assert (refused.value.status, refused.value.message) == (
        400, "syslog_url tcp://10.0.0.5:514 sends to 10.0.0.5:514, not a log host this platform allows: "
             "logs.example.com:514, audit.example.com:6514")
    with pytest.raises(APIError, match="sends to logs.example.com:515, not a log host"):
        lb_prepare(pm, Call(id="c", image="x", syslog_url="tcp://logs.example.com:515"))

    for url, said in [("tcp://logs.example.com:99999", "has no valid port"), ("tcp://logs.example.com:x", "has no valid port"),
                      ("tcp://logs.example.com:0", "sends to logs.example.com:0, not a log host")]:
        with pytest.raises(APIError, match=said) as refused:
            pm.hook.validate_app(app=App(name="a", syslog_url=url))
        assert refused.value.status == 400

    none = manager(tmp_path, "[plugins.image-policy]\nsyslog_hosts = []\n")
    with pytest.raises(APIError, match="not a log host this platform allows: none \\(no syslog_url\\)"):
        none.hook.validate_app(app=App(name="a", syslog_url="tcp://logs.example.com:514"))


def test_with_no_setting_nothing_is_refused(tmp_path):
    pm = manager(tmp_path)
    pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image="anywhere.example.com/fn"))
    pm.hook.validate_app(app=App(name="a", syslog_url="tcp://anywhere.example.com:514"))
    assert pm.get_plugin("image-policy:policy") is None  # nothing on the LB's call path


@pytest.mark.parametrize(("settings", "said"), [
    ('registries = ["team"]', "registries: 'team' names no registry host: give it as Docker resolves it, e.g. docker.io/team"),
    ('registries = "registry.example.com"', "registries must be a list of non-empty strings, got 'registry.example.com'"),
    ('syslog_hosts = [""]', "syslog_hosts must be a list of non-empty strings, got \\[''\\]"),
    ('registry = ["registry.example.com"]', "unknown keys \\['registry'\\]; known: \\['registries', 'syslog_hosts'\\]"),
    ('syslog_hosts = ["udp://logs.example.com:514"]', "syslog_hosts: 'udp://logs.example.com:514' is no host or host:port"),
    ('syslog_hosts = [":514"]', "syslog_hosts: ':514' is no host or host:port"),
    ('syslog_hosts = ["logs.example.com:abc"]', "syslog_hosts: 'logs.example.com:abc' is no host or host:port"),
])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path, settings, said):
    with pytest.raises(ConfigError, match=said):
        manager(tmp_path, f"[plugins.image-policy]\n{settings}\n")
