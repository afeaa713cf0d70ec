"""The placer's ordering through a real plugin manager, with runner statuses given by hand."""

import pytest

from fn_core import RunnerStatus
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.models import Call
from fn_core.plugins import get_plugin_manager
from fn_core.records import RunnerRef


def manager(tmp_path, toml=""):
    path = tmp_path / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env={"FN_PLACER": "ch-bounded"}))


def test_selected_by_name_and_keeps_ch_affinity_when_nobody_is_busy(tmp_path):
    pm = manager(tmp_path)
    assert pm.placer.name == "ch-bounded" and pm.placer.wants_runner_status
    runners = [RunnerRef(address=f"r{i}:1", status=RunnerStatus(active=0)) for i in range(3)]
    ch = get_plugin_manager(load_config(env={}), load_entrypoints=False)
    call = Call(id="1", fn_id="fn-A")
    assert pm.hook.place_call(call=call, runners=runners) == ch.hook.place_call(call=call, runners=runners)


def test_saturated_and_failed_runners_go_last(tmp_path):
    pm = manager(tmp_path, "[plugins.placer-bounded]\nmax_active = 2\n")
    call = Call(id="1", fn_id="fn-A")
    runners = [RunnerRef(address=f"r{i}:1", status=RunnerStatus()) for i in range(3)]
    home = pm.hook.place_call(call=call, runners=runners)[0]
    home.status.active = 2
    order = pm.hook.place_call(call=call, runners=runners)
    assert order[-1] is home and len(order) == 3
    order[0].status.failed = True
    assert pm.hook.place_call(call=call, runners=runners)[0] not in (home, order[0])


def test_each_plugin_manager_keeps_its_own_max_active(tmp_path):
    # tests and `fn-core serve` build several managers in one process: a later one must not reset an earlier one
    strict = manager(tmp_path, "[plugins.placer-bounded]\nmax_active = 1\n")
    default = manager(tmp_path)
    call = Call(id="1", fn_id="fn-A")
    runners = [RunnerRef(address=f"r{i}:1", status=RunnerStatus()) for i in range(3)]
    home = default.hook.place_call(call=call, runners=runners)[0]
    home.status.active = 1
    assert strict.hook.place_call(call=call, runners=runners)[-1] is home  # saturated at 1 call
    assert default.hook.place_call(call=call, runners=runners)[0] is home  # 1 of 8: still home


def test_a_misspelled_setting_stops_start_up(tmp_path):
    """`max_activ = 3` would leave the placer at its default of 8 without a word."""
    with pytest.raises(ConfigError, match=r"\[plugins.placer-bounded\]: unknown keys \['max_activ'\].*did you mean 'max_active'"):
        manager(tmp_path, "[plugins.placer-bounded]\nmax_activ = 3\n")
