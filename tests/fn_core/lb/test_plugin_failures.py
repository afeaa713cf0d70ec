"""What a client and the LB's log show when a plugin breaks a call on the LB: an `override_call` that puts a wrong
type into the call or its extensions, a `place_call` wrapper that raises. The plugin is named; no traceback from
deep in the core, no call sent to a runner."""

from __future__ import annotations

import logging

import pytest

from fn_core import Placer, hookimpl


class SetsExtension:
    def __init__(self, value) -> None:
        self.value = value

    @hookimpl
    def override_call(self, call, extensions):
        extensions["example.com/shares"] = self.value


class SetsField:
    def __init__(self, field: str, value) -> None:
        self.field, self.value = field, value

    @hookimpl
    def override_call(self, call):
        setattr(call, self.field, self.value)


class SetsHeader:
    @hookimpl
    def override_call(self, call):
        call.headers["X-Tenant"] = "acme"  # a header's value is a list of str


class SetsConfig:
    @hookimpl
    def override_call(self, call):
        call.config["SHARES"] = 512


class SetsAnnotation:
    @hookimpl
    def override_call(self, call):
        call.annotations["example.com/when"] = object()


class ReadsOnly:
    @hookimpl
    def override_call(self, call, extensions):
        extensions["example.com/seen"] = "yes"


CASES = [
    (SetsExtension(5), "extensions['example.com/shares'] is int (5), must be str"),
    (SetsExtension(["a"]), "extensions['example.com/shares'] is list (['a']), must be str"),
    (SetsField("memory", "lots"), "call.memory is str ('lots'), must be int"),
    (SetsField("memory", -1), "call.memory is -1, must be an int in 0..2**64-1"),
    (SetsField("timeout", 30.5), "call.timeout is float (30.5), must be int"),
    (SetsField("image", None), "call.image is NoneType (None), must be str"),
    (SetsField("method", b"POST"), "call.method is bytes (b'POST'), must be str"),
    (SetsHeader(), "call.headers['X-Tenant'] is str ('acme'), must be a list of str"),
    (SetsConfig(), "call.config['SHARES'] is int (512), must be str"),
    (SetsAnnotation(), "call.annotations['example.com/when'] is object"),
]


@pytest.mark.parametrize(("plugin", "problem"), CASES, ids=[problem.split(" is ")[0] for _, problem in CASES])
async def test_an_override_call_that_sets_a_wrong_type_fails_the_call_with_500_naming_the_plugin(
    fake_runners, lb_factory, deploy_fn, caplog, plugin, problem
):
    runner = await fake_runners()
    _, session, recorder = await lb_factory([runner.address], plugins=(("shares", plugin),))
    ids = await deploy_fn(session)
    caplog.clear()
    async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
        assert r.status == 500
        assert await r.json() == {"message": "internal server error (plugin shares failed)"}
        call_id = r.headers["Fn-Call-Id"]
    assert runner.calls == []  # nothing was sent
    [line] = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    message = line.getMessage()
    assert message.startswith(f"override_call of plugin 'shares' put a wrong type into call {call_id}: {problem}"), message
    assert "the call failed with 500" in message
    assert line.exc_info is None and "Traceback" not in caplog.text  # one line, no traceback from deep in the core
    assert recorder.outcomes[0][1].status == 500


async def test_with_several_override_call_plugins_all_are_named(fake_runners, lb_factory, deploy_fn, caplog):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], plugins=(("reads", ReadsOnly()), ("shares", SetsExtension(5))))
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
        assert (r.status, await r.json()) == (500, {"message": "internal server error (plugin shares or reads failed)"})
    assert "override_call of plugin 'shares' or 'reads' put a wrong type into call" in caplog.text


async def test_a_wrong_type_set_at_every_call_is_logged_once_then_counted(fake_runners, lb_factory, deploy_fn, caplog):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], plugins=(("shares", SetsExtension(5)),))
    ids = await deploy_fn(session)
    for _ in range(5):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
            assert r.status == 500
    assert len([rec for rec in caplog.records if "'shares'" in rec.getMessage()]) == 1


class SetsByApp:
    """A plugin with two mistakes of one exception type: one app's calls get a bad extension, the other's a bad memory."""

    @hookimpl
    def override_call(self, call, extensions):
        if call.app_name == "shop":
            extensions["example.com/shares"] = 5
        else:
            call.memory = "lots"


async def test_a_second_wrong_type_in_another_field_is_logged_in_full_not_counted_under_the_first(
    fake_runners, lb_factory, deploy_fn, caplog
):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], plugins=(("shares", SetsByApp()),))
    shop, blog = await deploy_fn(session, app="shop"), await deploy_fn(session, app="blog")
    for ids in (shop, blog, shop, blog):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
            assert r.status == 500
    problems = [rec.getMessage().split(": ", 1)[1] for rec in caplog.records if "'shares'" in rec.getMessage()]
    assert problems == [
        "extensions['example.com/shares'] is int (5), must be str; the call failed with 500",
        "call.memory is str ('lots'), must be int; the call failed with 500",
    ]


async def test_types_a_plugin_left_right_reach_the_runner(fake_runners, lb_factory, deploy_fn):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], plugins=(("reads", ReadsOnly()), ("memory", SetsField("memory", 256))))
    ids = await deploy_fn(session)
    for _ in range(2):  # the second call's extensions are the template's known ones
        async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
            assert r.status == 200 and await r.text() == "hi"
    assert [call["memory"] for call in runner.calls] == [256, 256]
    assert dict(runner.tries[1].extensions) == {"example.com/seen": "yes"}


# --- place_call: the plugin whose code raised is named -----------------------------------------------------------------
class FirstRunner:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    @hookimpl
    def place_call(self, call, runners):
        if self.fail:
            raise RuntimeError("ring not built")
        return list(runners)


class OffersFirst:
    def __init__(self, fail: bool = False) -> None:
        self.hooks = FirstRunner(fail)  # a placer's hooks object, apart from the plugin

    @hookimpl
    def register_placers(self):
        return [Placer(name="first", hooks=self.hooks)]


class RaisingWrapper:
    @hookimpl(wrapper=True)
    def place_call(self, call, runners):
        yield
        raise KeyError("audit sink")  # after the placer answered


class PassingWrapper:
    @hookimpl(wrapper=True)
    def place_call(self, call, runners):
        return (yield)  # the placer's exception passes through


async def test_a_place_call_wrapper_that_raises_is_named_not_the_placer(fake_runners, lb_factory, deploy_fn, caplog):
    runner = await fake_runners()
    plugins = (("first-placer", OffersFirst()), ("audit", RaisingWrapper()))
    _, session, _ = await lb_factory([runner.address], placer="first", plugins=plugins)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
        assert (r.status, await r.json()) == (500, {"message": "internal server error (plugin audit failed)"})
    assert "plugin 'audit' failed in place_call" in caplog.text
    assert "placer 'first'" not in caplog.text and runner.calls == []


async def test_a_placer_that_raises_under_a_wrapper_is_named_not_the_wrapper(fake_runners, lb_factory, deploy_fn, caplog):
    runner = await fake_runners()
    plugins = (("first-placer", OffersFirst(fail=True)), ("audit", PassingWrapper()))
    _, session, _ = await lb_factory([runner.address], placer="first", plugins=plugins)
    ids = await deploy_fn(session)
    async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
        assert (r.status, await r.json()) == (500, {"message": "internal server error (placer first failed)"})
    assert "placer 'first' of plugin 'first-placer' failed in place_call" in caplog.text
    assert "plugin 'audit' failed" not in caplog.text


class RaisesThenAddresses:
    """A placer that raises for one app and, for the others, answers addresses instead of the RunnerRefs: two mistakes
    of one type (TypeError), each to be seen in the log."""

    @hookimpl
    def place_call(self, call, runners):
        if call.app_name == "shop":
            return runners + ("shop",)  # TypeError: a list and a tuple
        return [ref.address for ref in runners]


class OffersAddresses:
    @hookimpl
    def register_placers(self):
        return [Placer(name="addresses", hooks=RaisesThenAddresses())]


async def test_a_placer_answering_addresses_is_logged_though_it_raised_the_same_type_before(
    fake_runners, lb_factory, deploy_fn, caplog
):
    runner = await fake_runners()
    _, session, _ = await lb_factory([runner.address], placer="addresses", plugins=(("addr-placer", OffersAddresses()),))
    shop, blog = await deploy_fn(session, app="shop"), await deploy_fn(session, app="blog")
    for ids in (shop, blog):
        async with session.post(f"/invoke/{ids['fn']['id']}", data="hi") as r:
            assert (r.status, await r.json()) == (500, {"message": "internal server error (placer addresses failed)"})
    lines = [rec for rec in caplog.records if "placer 'addresses' of plugin 'addr-placer' failed in place_call" in rec.getMessage()]
    assert [rec.exc_info[0] for rec in lines] == [TypeError, TypeError]
    assert "place_call must return a list of the RunnerRefs it was given, got ['" in caplog.text
