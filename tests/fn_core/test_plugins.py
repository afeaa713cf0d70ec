"""The plugin-manager factory: built-ins, entry points, disabling, failures, selection by name."""

import sys
import textwrap
import warnings

import pytest

from fn_core import APIError, Placer, hookimpl
from fn_core.config import load_config
from fn_core.errors import ConfigError, PluginError
from fn_core.hook_calls import plugin_names
from fn_core.models import Call
from fn_core.plugins import get_plugin_manager
from fn_core.records import CallOutcome


def make_dist(tmp_path, monkeypatch, dist, module, source, ep_name=None):
    """A throwaway installed distribution on sys.path with an fn_core.plugins entry point."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[fn_core.plugins]\n{ep_name or dist} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)


GOOD_PLUGIN = """
    from fn_core import hookimpl
    @hookimpl
    def override_call(call, extensions):
        extensions["seen-by"] = "fn-fake"
"""


def infos_by_name(pm):
    return {i.name: i for i in pm.plugin_infos()}


def test_builtins_are_listed_with_what_they_provide(fn_plugin_manager):
    infos = infos_by_name(fn_plugin_manager)
    assert infos["placer-ch"].provides == ["placer: ch"]
    assert infos["placer-naive"].provides == ["placer: naive"]
    assert infos["driver-docker"].provides == ["driver: docker"]
    assert infos["pool-static"].provides == ["runner-pool: static"]
    assert "place_call" in infos["placer-ch"].hooks
    assert all(i.status == "active" and i.builtin for i in infos.values())


def test_third_party_entry_point_is_discovered_and_its_hooks_run(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "fn-fake", "fn_fake_plugin", GOOD_PLUGIN)
    pm = get_plugin_manager(load_config(env={}))
    info = infos_by_name(pm)["fn-fake"]
    assert (info.distribution, info.version, info.status) == ("fn-fake", "1.2.3", "active")
    assert info.hooks == ["override_call"]
    extensions = {}
    pm.hook.override_call(call=Call(id="c1"), extensions=extensions)
    assert extensions["seen-by"] == "fn-fake"


def test_fn_disable_plugins_blocks_a_plugin(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "fn-fake", "fn_fake_plugin", GOOD_PLUGIN)
    pm = get_plugin_manager(load_config(env={"FN_DISABLE_PLUGINS": "fn-fake"}))
    assert infos_by_name(pm)["fn-fake"].status == "disabled"
    extensions = {}
    pm.hook.override_call(call=Call(id="c1"), extensions=extensions)
    assert "seen-by" not in extensions


def test_a_plugin_that_fails_to_import_is_reported_not_fatal(tmp_path, monkeypatch, caplog, recwarn):
    make_dist(tmp_path, monkeypatch, "fn-broken", "fn_broken_plugin", "raise ImportError('no module named cheese')")
    pm = get_plugin_manager(load_config(env={}))
    # said once, through logging (FN_LOG_DEST, FN_LOG_FORMAT=json): not also as a Python warning on bare stderr
    assert "plugin fn-broken (fn-broken) failed to load and is skipped: ImportError: no module named cheese (FN_STRICT_CONFIG makes this stop start-up)" in caplog.text
    assert [str(w.message) for w in recwarn] == []
    info = infos_by_name(pm)["fn-broken"]
    assert info.status == "failed" and "cheese" in info.error
    assert pm.placer.name == "ch"  # the platform goes on


def test_a_plugin_that_fails_to_import_stops_a_strict_start_naming_it_and_is_listed(tmp_path, monkeypatch):
    """With FN_STRICT_CONFIG an operator wants no node without a plugin it installed (an authorising override_call
    that is missing lets every call through); `fn-core plugins` still lists it, failed."""
    make_dist(tmp_path, monkeypatch, "fn-broken", "fn_broken_plugin", "raise ImportError('no module named cheese')")
    with pytest.raises(PluginError) as stopped:
        get_plugin_manager(load_config(env={"FN_STRICT_CONFIG": "1"}))
    assert str(stopped.value) == (
        "plugin 'fn-broken' (fn-broken) failed to load: ImportError: no module named cheese (FN_STRICT_CONFIG is on: "
        "repair or uninstall it, or leave it out with FN_DISABLE_PLUGINS=fn-broken)"
    )
    listing = get_plugin_manager(load_config(env={"FN_STRICT_CONFIG": "1"}), select=False, keep_invalid=True)
    assert infos_by_name(listing)["fn-broken"].status == "failed"
    disabled = get_plugin_manager(load_config(env={"FN_STRICT_CONFIG": "1", "FN_DISABLE_PLUGINS": "fn-broken"}))
    assert infos_by_name(disabled)["fn-broken"].status == "disabled"


def test_a_hookimpl_that_matches_no_spec_stops_startup_naming_the_plugin(tmp_path, monkeypatch):
    source = "from fn_core import hookimpl\n@hookimpl\ndef overide_call(call):\n    pass\n"
    make_dist(tmp_path, monkeypatch, "fn-typo", "fn_typo_plugin", source)
    with pytest.raises(PluginError, match="fn-typo"):
        get_plugin_manager(load_config(env={}))


def test_a_hookimpl_with_an_unknown_argument_stops_startup_naming_the_plugin():
    class Bad:
        @hookimpl
        def override_call(self, call, request):
            pass

    with pytest.raises(PluginError, match="bad-args"):
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("bad-args", Bad())])


def test_unknown_placer_lists_the_available_ones():
    with pytest.raises(ConfigError) as err:
        get_plugin_manager(load_config(env={"FN_PLACER": "nope"}), load_entrypoints=False)
    assert "'nope'" in str(err.value) and "available placers: ch, naive (" in str(err.value)


def test_unknown_runner_pool_stops_start_up_listing_the_available_ones():
    with pytest.raises(ConfigError) as err:
        get_plugin_manager(load_config(env={"FN_RUNNER_POOL": "k8s"}), load_entrypoints=False)
    assert "unknown runner pool 'k8s'; available runner pools: static (" in str(err.value)


def test_two_plugins_offering_one_placer_name_is_an_error_naming_both():
    class Dup:
        @hookimpl
        def register_placers(self):
            return [Placer(name="ch", hooks=object())]

    with pytest.raises(ConfigError) as err:
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("my-ch", Dup())])
    assert "placer-ch" in str(err.value) and "my-ch" in str(err.value)


def test_only_the_selected_placer_is_active():
    pm = get_plugin_manager(load_config(env={"FN_PLACER": "naive"}), load_entrypoints=False)
    impls = [impl.plugin_name for impl in pm.hook.place_call.get_hookimpls()]
    assert impls == ["placer:naive"]


def test_configure_reaches_plugins_with_their_own_settings(tmp_path):
    cfg = tmp_path / "fn.toml"
    cfg.write_text('[plugins.recorder]\ngreeting = "hello"\n')
    seen = {}

    class Recorder:
        @hookimpl
        def configure(self, config):
            seen.update(config.plugin_settings("recorder"))

    get_plugin_manager(load_config(cfg, env={}), load_entrypoints=False, extra_plugins=[("recorder", Recorder())])
    assert seen == {"greeting": "hello"}


def test_a_plugin_can_register_its_object_in_configure_and_is_listed_with_its_hooks(tmp_path):
    """pytest's idiom: a plugin wanted only under a setting registers an object of its own at configure."""
    cfg = tmp_path / "fn.toml"
    seen = []

    class AuditLog:
        @hookimpl
        def call_finished(self, call, outcome):
            seen.append((call.id, outcome.status))

    class Audit:
        @hookimpl
        def configure(self, config, plugin_manager):
            if config.plugin_settings("audit").get("enabled"):
                plugin_manager.register(AuditLog(), name="audit:log")

    for enabled in (False, True):
        cfg.write_text(f"[plugins.audit]\nenabled = {str(enabled).lower()}\n")
        pm = get_plugin_manager(load_config(cfg, env={}), load_entrypoints=False, extra_plugins=[("audit", Audit())])
        pm.hook.call_finished(call=Call(id=f"c-{enabled}"), outcome=CallOutcome(status=200))
        assert infos_by_name(pm)["audit"].hooks == (["call_finished", "configure"] if enabled else ["configure"])
    assert seen == [("c-True", 200)]  # one manager's object; the other manager has none


def test_a_plugin_class_instead_of_an_instance_is_refused_with_its_name():
    class NotInstantiated:
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PluginError, match="not-instantiated"):
            get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("not-instantiated", NotInstantiated)])


def test_two_distributions_offering_one_plugin_name_stop_start_up_naming_both(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "fn-clash", "fn_clash_plugin", GOOD_PLUGIN, ep_name="tracing")
    with pytest.raises(PluginError) as err:
        get_plugin_manager(load_config(env={}))
    assert "two installed distributions offer the plugin 'tracing': fn-core" in str(err.value)
    assert "fn-clash 1.2.3" in str(err.value)


def test_an_installed_plugin_a_test_also_registers_in_process_runs_once(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "fn-fake", "fn_fake_plugin", GOOD_PLUGIN)
    import fn_fake_plugin

    pm = get_plugin_manager(load_config(env={}), extra_plugins=[("under-test", fn_fake_plugin)])
    impls = [impl.plugin_name for impl in pm.hook.override_call.get_hookimpls()]  # other installed plugins may add theirs
    assert impls.count("under-test") == 1 and "fn-fake" not in impls
    assert "fn-fake" not in infos_by_name(pm)


def test_disabling_a_name_no_plugin_has_is_named_with_the_known_ones(caplog, recwarn):
    pm = get_plugin_manager(load_config(env={"FN_DISABLE_PLUGINS": "fn-metric,tracing"}))
    [message] = [r.getMessage() for r in caplog.records if "FN_DISABLE_PLUGINS" in r.getMessage()]
    assert [str(w.message) for w in recwarn] == []
    assert message.startswith("FN_DISABLE_PLUGINS names no installed plugin: fn-metric (plugins: ")
    assert "fn-metrics" in message
    assert infos_by_name(pm)["tracing"].status == "disabled" and infos_by_name(pm)["fn-metrics"].status == "active"


def _config_file(tmp_path, text: str):
    path = tmp_path / "fn.toml"
    path.write_text(text)
    return path


def test_a_plugins_table_no_plugin_has_is_named_with_the_known_ones_and_start_up_goes_on(tmp_path, caplog):
    # a typo for cpu-shares; the fn-metrics table is a built-in's, and tracing's is read though tracing is disabled
    path = _config_file(tmp_path, "[plugins.cpu-share]\nshares_per_mb = 2\n[plugins.fn-metrics]\nmax_fns = 5\n[plugins.tracing]\n")
    pm = get_plugin_manager(load_config(path, env={"FN_DISABLE_PLUGINS": "tracing"}))
    [message] = [r.getMessage() for r in caplog.records if "[plugins." in r.getMessage()]
    assert message.startswith("config file: [plugins.cpu-share] names no installed plugin (plugins: ")
    assert "fn-metrics" in message.split("(plugins: ")[1] and message.endswith("its settings are read by no plugin")
    assert pm.placer is not None  # started


def test_under_strict_config_a_plugins_table_no_plugin_has_stops_start_up_but_not_a_listing(tmp_path, caplog):
    path = _config_file(tmp_path, "strict = true\n[plugins.cpu-share]\n[plugins.fn-metric]\n")
    with pytest.raises(ConfigError, match=r"^config file: \[plugins.cpu-share\], \[plugins.fn-metric\] names no installed"):
        get_plugin_manager(load_config(path, env={}))
    get_plugin_manager(load_config(path, env={}), select=False)  # `fn-core plugins` lists what there is, and warns
    assert any(r.getMessage().startswith("config file: [plugins.cpu-share]") for r in caplog.records)


def test_a_placer_with_no_place_call_stops_start_up():
    class Lazy:
        @hookimpl
        def register_placers(self):
            return [Placer(name="lazy", hooks=object())]

    with pytest.raises(PluginError, match="placer 'lazy' of plugin 'lazy-plugin' has no place_call hookimpl"):
        get_plugin_manager(load_config(env={"FN_PLACER": "lazy"}), load_entrypoints=False, extra_plugins=[("lazy-plugin", Lazy())])


def test_a_placer_whose_hooks_are_a_class_not_an_instance_stops_start_up_naming_it():
    class FirstRunner:
        @hookimpl
        def place_call(self, call, runners):
            return runners

    class Offers:
        @hookimpl
        def register_placers(self):
            return [Placer(name="first", hooks=FirstRunner)]

    with pytest.raises(PluginError, match="placer 'first' of plugin 'offers' gives the class FirstRunner as its hooks"):
        get_plugin_manager(load_config(env={"FN_PLACER": "first"}), load_entrypoints=False, extra_plugins=[("offers", Offers())])


@pytest.mark.parametrize("how", ["as a plugin", "registered in configure"])
def test_a_place_call_outside_the_selected_placer_stops_start_up_naming_its_plugin(how):
    class Hijack:
        @hookimpl(tryfirst=True)
        def place_call(self, call, runners):
            return []

    class RegistersOne:
        @hookimpl
        def configure(self, config, plugin_manager):
            plugin_manager.register(Hijack(), name="sneaky:placer")

    plugin, name = (Hijack(), "p") if how == "as a plugin" else (RegistersOne(), "sneaky:placer")
    with pytest.raises(PluginError, match=rf"plugin {name!r} (\(registered in process\) )?implements place_call outside a placer: .* selected placer 'ch'"):
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("p", plugin)])


def test_a_place_call_wrapper_outside_the_placer_is_allowed():
    class Watch:
        @hookimpl(wrapper=True)
        def place_call(self, call, runners):
            return (yield)

    pm = get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("watch", Watch())])
    assert pm.placer is not None and pm.placer.name == "ch"


def test_a_plugin_that_fails_in_configure_is_named():
    class BadConf:
        @hookimpl
        def configure(self, config):
            int("x")

    with pytest.raises(PluginError, match=r"plugin 'bad-conf' \(registered in process\) failed in configure: ValueError: invalid literal"):
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("bad-conf", BadConf())])


def test_an_api_error_raised_in_configure_is_named_too():
    """Only a ConfigError speaks for itself; an APIError (meant for a client, not start-up) names the plugin."""

    class Misplaced:
        @hookimpl
        def configure(self, config):
            raise APIError("quota service unreachable", status=503)

    with pytest.raises(PluginError, match=r"plugin 'quota' \(registered in process\) failed in configure: APIError: quota service unreachable"):
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("quota", Misplaced())])


def test_third_party_hooks_run_before_the_built_ins_even_those_registered_in_configure():
    """The hookspecs' rule: built-ins are registered first, and the objects built-ins register in configure (tracing,
    fn-metrics, status-docker) run last too, so a third-party impl runs before every built-in one."""

    class Third:
        @hookimpl
        def call_finished(self, call, outcome):
            pass

        @hookimpl
        def runner_status(self, status, runner):
            pass

        @hookimpl
        def metric_families(self):
            return None

    config = load_config(env={}, overrides={"zipkin_url": "http://127.0.0.1:9411/api/v2/spans"})
    pm = get_plugin_manager(config, load_entrypoints=False, extra_plugins=[("third", Third())])
    for hook in ("call_finished", "runner_status", "metric_families"):
        order = plugin_names(getattr(pm.hook, hook))
        assert order[0] == "third" and len(order) > 1, (hook, order)
    assert "tracing:tracer" in plugin_names(pm.hook.call_finished)


def test_a_registration_hook_that_returns_one_record_not_a_list_is_named():
    class One:
        @hookimpl
        def register_placers(self):
            return Placer(name="single", hooks=object())

    with pytest.raises(PluginError, match="plugin 'one': register_placers must return a list of Placer records"):
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("one", One())])


def test_fn_cores_own_entry_points_under_another_spelling_of_its_name_are_no_clash(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "fn_core", "fn_core_copy_plugin", GOOD_PLUGIN, ep_name="tracing")  # e.g. a second metadata dir
    pm = get_plugin_manager(load_config(env={}))
    assert infos_by_name(pm)["tracing"].distribution == "fn-core"


def test_a_failing_listener_among_instances_of_one_class_is_named_and_the_others_run_once(caplog):
    """Operators register one listener class several times (one per tenant, per sink): a failure is told apart."""
    from fn_core.hook_calls import run_isolated

    class Billing:
        def __init__(self, fail: bool = False) -> None:
            self.fail, self.runs = fail, 0

        @hookimpl
        def call_finished(self, call, outcome):
            self.runs += 1
            if self.fail:
                raise RuntimeError("ledger unreachable")

    listeners = {"ok-a": Billing(), "bad": Billing(fail=True), "ok-b": Billing()}
    pm = get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=list(listeners.items()))
    run_isolated(pm.hook.call_finished, call=Call(id="c1"), outcome=CallOutcome(status=200))
    assert {name: plugin.runs for name, plugin in listeners.items()} == {"ok-a": 1, "bad": 1, "ok-b": 1}
    assert "plugin 'bad' failed in call_finished" in caplog.text


# --- hooks are called synchronously: an `async def` impl would never run -------------------------------------------
ASYNC_MESSAGE = "is an async def: fn-core calls hooks synchronously on the event loop and never awaits them"


def test_an_async_override_call_stops_start_up_naming_the_plugin_and_the_hook():
    """An authorising override_call written as a coroutine used to be listed as active and let every call through."""

    class Authorise:
        @hookimpl
        async def override_call(self, call, extensions):
            raise APIError("forbidden", status=403)

    with pytest.raises(PluginError) as err:
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("authorise", Authorise())])
    message = str(err.value)
    assert message.startswith("plugin 'authorise' (registered in process) is invalid: hook override_call " + ASYNC_MESSAGE)
    assert "make it a plain def, and quick" in message


def test_an_installed_plugin_with_an_async_generator_hook_is_named_with_its_distribution(tmp_path, monkeypatch):
    source = "from fn_core import hookimpl\n@hookimpl\nasync def call_finished(call, outcome):\n    yield\n"
    make_dist(tmp_path, monkeypatch, "fn-async", "fn_async_plugin", source)
    with pytest.raises(PluginError, match=rf"^plugin 'fn-async' \(fn-async 1\.2\.3\) is invalid: hook call_finished {ASYNC_MESSAGE}"):
        get_plugin_manager(load_config(env={}))


def test_an_async_hook_of_an_object_registered_in_configure_stops_start_up_naming_the_plugin():
    class Listener:
        @hookimpl
        async def call_finished(self, call, outcome):
            pass

    class Registers:
        @hookimpl
        def configure(self, config, plugin_manager):
            plugin_manager.register(Listener(), name="registers:listener")

    with pytest.raises(PluginError, match=rf"plugin 'registers' \(registered in process\) failed in configure: .*hook call_finished {ASYNC_MESSAGE}"):
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("registers", Registers())])


@pytest.mark.parametrize("selected", [True, False])
def test_an_async_place_call_of_a_placer_stops_start_up_selected_or_not(selected):
    class AsyncHooks:
        @hookimpl
        async def place_call(self, call, runners):
            return runners

    class Offers:
        @hookimpl
        def register_placers(self):
            return [Placer(name="async-first", hooks=AsyncHooks())]

    env = {"FN_PLACER": "async-first"} if selected else {}
    with pytest.raises(PluginError, match=f"placer 'async-first' of plugin 'offers' is invalid: hook place_call {ASYNC_MESSAGE}"):
        get_plugin_manager(load_config(env=env), load_entrypoints=False, extra_plugins=[("offers", Offers())])


# --- a misspelled hook: named with the distribution and the closest hook, in placers too -----------------------------
def test_a_misspelled_hook_is_named_with_its_distribution_and_the_closest_hook(tmp_path, monkeypatch):
    source = "from fn_core import hookimpl\n@hookimpl\ndef overide_call(call):\n    pass\n"
    make_dist(tmp_path, monkeypatch, "fn-typo", "fn_typo_plugin", source)
    with pytest.raises(PluginError) as err:
        get_plugin_manager(load_config(env={}))
    assert str(err.value) == "plugin 'fn-typo' (fn-typo 1.2.3) is invalid: unknown hook 'overide_call' (did you mean 'override_call'?)"


def test_a_hook_without_its_hookimpl_marker_is_named_not_left_to_do_nothing(tmp_path, monkeypatch):
    # pluggy takes an unmarked function for a helper: the plugin would load, listed active, and never run
    source = "def override_call(call, extensions):\n    extensions['x'] = '1'\n"
    make_dist(tmp_path, monkeypatch, "fn-unmarked", "fn_unmarked_plugin", source)
    with pytest.raises(PluginError) as err:
        get_plugin_manager(load_config(env={}))
    assert str(err.value) == ("plugin 'fn-unmarked' (fn-unmarked 1.2.3) is invalid: override_call is not marked @hookimpl "
                              "(`from fn_core import hookimpl`), so fn-core would never call it")


def test_a_misspelled_hook_in_a_placer_that_is_not_selected_stops_start_up():
    class Hooks:
        @hookimpl
        def place_cal(self, call, runners):
            return runners

    class Offers:
        @hookimpl
        def register_placers(self):
            return [Placer(name="typo", hooks=Hooks())]

    with pytest.raises(PluginError) as err:  # the selected placer is ch: "typo" would fail only once chosen
        get_plugin_manager(load_config(env={}), load_entrypoints=False, extra_plugins=[("typo-placer", Offers())])
    assert str(err.value) == "placer 'typo' of plugin 'typo-placer' is invalid: unknown hook 'place_cal' (did you mean 'place_call'?)"


def test_a_listing_keeps_invalid_plugins_marked_with_why_and_lists_the_others(tmp_path, monkeypatch):
    """`fn-core plugins` (keep_invalid): the table still comes, with the broken plugins marked."""
    make_dist(tmp_path, monkeypatch, "fn-typo", "fn_typo_plugin", "from fn_core import hookimpl\n@hookimpl\ndef overide_call(call):\n    pass\n")

    class Hooks:
        @hookimpl
        def place_cal(self, call, runners):
            return runners

    class Offers:
        @hookimpl
        def register_placers(self):
            return [Placer(name="typo", hooks=Hooks())]

    class Async:
        @hookimpl
        async def call_finished(self, call, outcome):
            pass

    plugins = [("typo-placer", Offers()), ("async-listener", Async())]
    pm = get_plugin_manager(load_config(env={}), extra_plugins=plugins, select=False, keep_invalid=True)
    infos = infos_by_name(pm)
    assert (infos["fn-typo"].status, infos["fn-typo"].error) == ("invalid", "unknown hook 'overide_call' (did you mean 'override_call'?)")
    assert infos["typo-placer"].status == "invalid"
    assert infos["typo-placer"].error == "placer 'typo': unknown hook 'place_cal' (did you mean 'place_call'?)"
    assert infos["async-listener"].status == "invalid" and ASYNC_MESSAGE in infos["async-listener"].error
    assert infos["placer-ch"].status == "active" and infos["placer-ch"].provides == ["placer: ch"]
    assert pm.get_plugin("async-listener") is None  # an invalid plugin's hooks do not run
    with pytest.raises(PluginError):  # a server still refuses to start
        get_plugin_manager(load_config(env={}), extra_plugins=plugins)
