"""Fast checks of the plugin's logic through a real plugin manager (no node)."""

import json

import pytest

import fn_audit_log
from fn_core import APIError
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.models import App, Fn, Trigger
from fn_core.plugins import get_plugin_manager


def manager(tmp_path, toml):
    path = tmp_path / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env={}), load_entrypoints=False, extra_plugins=[("audit-log", fn_audit_log)])


def test_each_change_is_one_json_line(tmp_path):
    log = tmp_path / "audit.jsonl"
    pm = manager(tmp_path, f'[plugins.audit-log]\npath = "{log}"\n')
    app = App(name="shop", id="a1")
    fn = Fn(name="charge", app_id="a1", image="reg/charge:1", id="f1")
    pm.hook.object_changed(action="created", app=app, fn=fn, trigger=None)
    pm.hook.object_changed(action="deleted", app=app, fn=fn, trigger=Trigger(name="t", app_id="a1", fn_id="f1", source="/pay", id="t1"))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [{k: v for k, v in line.items() if k != "time"} for line in lines] == [
        {"action": "created", "kind": "fn", "id": "f1", "name": "charge", "app_id": "a1", "app_name": "shop", "image": "reg/charge:1"},
        {"action": "deleted", "kind": "trigger", "id": "t1", "name": "t", "app_id": "a1", "app_name": "shop", "fn_id": "f1",
         "source": "/pay"},
    ]
    assert all(line["time"].endswith("+00:00") for line in lines)


def test_an_app_with_the_keep_annotation_cannot_be_deleted_but_what_is_in_it_can(tmp_path):
    pm = manager(tmp_path, f'[plugins.audit-log]\npath = "{tmp_path}/a.jsonl"\nkeep_annotation = "example.com/keep"\n')
    kept = App(name="billing", id="a1", annotations={"example.com/keep": True})
    with pytest.raises(APIError, match="app billing carries the annotation example.com/keep") as refused:
        pm.hook.validate_delete(app=kept, fn=None, trigger=None)
    assert refused.value.status == 409
    pm.hook.validate_delete(app=kept, fn=Fn(name="f", app_id="a1", image="i", id="f1"), trigger=None)
    pm.hook.validate_delete(app=App(name="scratch", id="a2"), fn=None, trigger=None)


@pytest.mark.parametrize(("settings", "said"), [
    ('path = ""', "path must name the file the audit log is appended to, got ''"),
    ('path = "/nonexistent-dir/audit.jsonl"', "cannot append to /nonexistent-dir/audit.jsonl: No such file or directory"),
    ("keep_annotation = 5", "keep_annotation must be an annotation key, got 5"),
    # a typo would leave apps unprotected, or nothing logged, without a word
    ('keep_anotation = "example.com/keep"', "unknown keys \\['keep_anotation'\\].*did you mean 'keep_annotation'"),
    ('paht = "/var/log/fn/audit.jsonl"', "unknown keys \\['paht'\\].*did you mean 'path'"),
])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path, settings, said):
    with pytest.raises(ConfigError, match=said):
        manager(tmp_path, f"[plugins.audit-log]\n{settings}\n")


def test_with_no_setting_the_plugin_does_nothing(tmp_path):
    pm = manager(tmp_path, "")
    assert pm.hook.object_changed.get_hookimpls() == [] and pm.hook.validate_delete.get_hookimpls() == []
