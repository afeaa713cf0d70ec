"""The LB's per-fn call template: a call made from it is the call built field by field, JSON and slot key included."""

import json

import attrs

from fn_core.lb.call import CallTemplate, CallTemplates
from fn_core.models import App, Fn, Trigger, slot_key
from fn_core.proto import runner_pb2 as pb
from fn_core.wire import CallOffer


def _records() -> tuple[App, Fn]:
    app = App(id="app1", name="a", config={"A": "app", "B": "app"}, annotations={"x/a": 1}, syslog_url="tcp://l:514")
    fn = Fn(id="fn1", app_id="app1", name="f", image="img:1", memory=256, config={"B": "fn"}, annotations={"x/f": {"k": [1]}})
    return app, fn


def test_a_templated_call_sends_the_same_json_and_slot_key_as_one_encoded_whole():
    template = CallTemplate.of(*_records())
    trigger = Trigger(id="t1", app_id="app1", fn_id="fn1", name="t", type="http", source="/x")
    call = template.new_call(method="PUT", url="http://h/t/a/x", headers={"Content-Type": ["text/plain"]},
                             detached=True, trigger=trigger)
    assert call.config == {"A": "app", "B": "fn", "FN_APP_ID": "app1", "FN_FN_ID": "fn1", "FN_MEMORY": "256", "FN_TYPE": "sync"}
    assert (call.type, call.trigger_id, call.syslog_url) == ("detached", "t1", "tcp://l:514")
    fast = CallOffer(call, template.slot_key, shared_json=template.shared_json)
    whole = CallOffer(call, slot_key(call))
    assert fast.slot_key == whole.slot_key
    assert json.loads(_call_json(fast)) == json.loads(_call_json(whole)) == call.to_json_dict()


def test_each_call_gets_its_own_id_and_maps_a_plugin_may_change():
    template = CallTemplate.of(*_records())
    first = template.new_call(method="POST", url="u", headers={})
    first.config["B"] = "changed by a plugin"
    second = template.new_call(method="POST", url="u", headers={})
    assert first.id != second.id and second.config["B"] == "fn"


def test_templates_follow_the_records_the_lookup_cache_hands_out():
    templates = CallTemplates()
    app, fn = _records()
    template = templates.get(app, fn)
    assert templates.get(app, fn) is template
    same_app_read_by_name = App(**attrs.asdict(app, recurse=False))
    assert templates.get(same_app_read_by_name, fn) is template
    updated = Fn(id="fn1", app_id="app1", name="f", image="img:2")  # a new record after the cache's TTL
    assert templates.get(app, updated).slot_key != template.slot_key


def _call_json(offer: CallOffer) -> str:
    return getattr(pb.ClientMsg.FromString(offer.try_bytes()), "try").models_call_json


def test_a_call_an_override_call_plugin_read_but_left_alone_keeps_the_templates_key_and_json():
    from fn_core import hookimpl
    from fn_core.config import Config
    from fn_core.lb.agent import LBAgent
    from fn_core.testing import build_plugin_manager

    class ReadsOnly:  # as cpu-shares: reads an annotation, writes an extension
        @hookimpl
        def override_call(self, call, extensions):
            extensions["reads-only/seen"] = str(call.annotations["x/a"])

    class RaisesMemory:
        @hookimpl
        def override_call(self, call):
            call.memory = 512

    template = CallTemplate.of(*_records())
    for plugin, kept in ((ReadsOnly(), True), (RaisesMemory(), False)):
        agent = LBAgent(Config(), build_plugin_manager(plugin), pool=None)  # prepare needs no runner
        call = template.new_call(method="POST", url="u", headers={})
        offer = agent.prepare(call, template)
        whole = CallOffer(call, slot_key(call, offer.extensions), offer.extensions)
        assert offer.slot_key == whole.slot_key != template.slot_key  # the extensions, or the memory, are in the key
        assert (offer.shared_json == template.shared_json) is kept
        assert json.loads(_call_json(offer)) == json.loads(_call_json(whole)) == call.to_json_dict()
    assert offer.extensions == {} and json.loads(_call_json(offer))["memory"] == 512


def test_a_plugin_that_changes_a_nested_annotation_in_place_changes_its_call_only():
    from fn_core import hookimpl
    from fn_core.config import Config
    from fn_core.lb.agent import LBAgent
    from fn_core.testing import build_plugin_manager

    class Tier:  # edits an annotation's object in place, as plugins do
        @hookimpl
        def override_call(self, call):
            call.annotations["x/f"]["tier"] = call.headers.get("X-Tier", ["free"])[0]

    app, fn = _records()
    template = CallTemplate.of(app, fn)
    agent = LBAgent(Config(), build_plugin_manager(Tier()), pool=None)
    sent = []
    for tier in ("gold", None):
        call = template.new_call(method="POST", url="u", headers={"X-Tier": [tier]} if tier else {})
        assert call.annotations["x/f"] == {"k": [1]}  # no earlier call's change
        offer = agent.prepare(call, template)
        sent.append(json.loads(_call_json(offer))["annotations"]["x/f"])
        assert offer.slot_key == slot_key(call, offer.extensions) != template.slot_key
    assert sent == [{"k": [1], "tier": "gold"}, {"k": [1], "tier": "free"}]
    assert fn.annotations == {"x/f": {"k": [1]}} and template.annotations["x/f"] == {"k": [1]}  # the records untouched


def test_calls_that_differ_only_in_their_extensions_do_not_share_a_slot():
    from fn_core import hookimpl
    from fn_core.config import Config
    from fn_core.lb.agent import LBAgent
    from fn_core.testing import build_plugin_manager

    class Tenant:
        @hookimpl
        def override_call(self, call, extensions):
            extensions["example.com/tenant"] = call.headers["X-Tenant"][0]

    template = CallTemplate.of(*_records())
    agent = LBAgent(Config(), build_plugin_manager(Tenant()), pool=None)
    keys = {}
    for tenant in ("alpha", "beta", "alpha"):
        call = template.new_call(method="POST", url="u", headers={"X-Tenant": [tenant]})
        offer = agent.prepare(call, template)
        assert offer.slot_key == slot_key(call, {"example.com/tenant": tenant})  # what a runner works out itself
        keys.setdefault(tenant, set()).add(offer.slot_key)
    assert len(keys["alpha"]) == 1 and keys["alpha"] != keys["beta"]
    # no extensions: Fn's own key (api/agent/slots.go), as a stock Fn runner computes it
    call = template.new_call(method="POST", url="u", headers={})
    assert slot_key(call, {}) == slot_key(call) == template.slot_key
