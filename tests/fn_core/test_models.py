"""Call model: Fn's JSON (models.Call) both ways, and the slot key."""

import json

import attrs
import pytest

from fn_core.models import Call, parse_milli_cpus, slot_key


def test_call_json_uses_fns_field_names_and_round_trips():
    call = Call(id="01C", app_id="a1", fn_id="f1", image="img:1", memory=256, cpus=500, config={"K": "V"},
                headers={"Content-Type": ["text/plain"]}, annotations={"x/y": {"z": 1}})
    data = json.loads(call.to_json())
    assert data["cpus"] == "500m" and data["memory"] == 256 and data["fn_id"] == "f1"
    assert Call.from_json(call.to_json()) == call


def test_call_json_leaves_out_empty_strings_and_maps_and_keeps_numbers():
    data = json.loads(Call(id="c1", image="img:1").to_json())
    assert {"id", "image", "type", "memory", "timeout", "idle_timeout", "tmpfs_size"} <= set(data)
    assert data["tmpfs_size"] == 0 and data["type"] == "sync"
    assert not {"cpus", "config", "headers", "annotations", "url", "syslog_url", "error"} & set(data)


def test_go_style_json_from_an_fn_lb_is_understood():
    text = '{"id":"c1","image":"i","type":"sync","memory":128,"timeout":30,"idle_timeout":30,"cpus":"0.25","unknown":1}'
    call = Call.from_json(text)
    assert call.cpus == 250 and call.id == "c1"


@pytest.mark.parametrize("garbage", [
    "", "nope", "[]", '{"image": "x"}', '{"id": "c", "memory": "lots"}', '{"id":"c","headers":{"a":"b"}}',
    '{"id":"c","memory":true}', '{"id":"c","timeout":1.5}', '{"id":"c","image":7}', '{"id":"c","config":[]}',
    '{"id":"c","cpus":"-1"}', '{"id":"c","cpus":[1]}', '{"id":"c","cpus":"inf"}', '{"id":"c","cpus":"1e400"}',
    '{"id":"c","config":{"K":1}}', '{"id":"\\ud800"}', '{"id":"c","image":"i\\udfff"}',
    '{"id":"c","headers":{"X-A":["\\ud800"]}}', '{"id":"c","annotations":{"k":["\\udc80"]}}',
    '{"id":"c","x":' + "[" * 100_000 + "]" * 100_000 + "}",
])
def test_garbage_call_json_raises_value_error(garbage):
    with pytest.raises(ValueError):
        Call.from_json(garbage)


def test_a_header_value_keeps_the_bytes_a_client_sent_that_were_not_utf8_and_a_pair_is_one_character():
    # the LB decodes a header's bytes as aiohttp does (surrogateescape): \udc80-\udcff are those bytes, restored
    # in the request to the container; anywhere else a lone surrogate is refused, and a pair is a character
    call = Call.from_json('{"id":"c","headers":{"X-A":["\\udcff"]},"config":{"K":"\\ud83d\\ude00"}}')
    assert call.headers == {"X-A": ["\udcff"]} and call.config == {"K": "\U0001F600"}


def test_milli_cpus_forms():
    assert [parse_milli_cpus(v) for v in ("", "100m", "0.1", "2", 0)] == [0, 100, 100, 2000, 0]
    with pytest.raises(ValueError):
        parse_milli_cpus("-1")


def test_slot_key_changes_with_what_the_container_is_started_with():
    base = Call(id="1", app_id="a", fn_id="f", image="i", config={"A": "1"})
    same_but_other_call = Call(id="2", app_id="a", fn_id="f", image="i", config={"A": "1"}, headers={"X": ["y"]})
    assert slot_key(base) == slot_key(same_but_other_call)
    assert len(slot_key(base)) == 32
    for changed in (Call(id="1", app_id="a", fn_id="f", image="i", config={"A": "2"}),
                    Call(id="1", app_id="a", fn_id="f", image="i", config={"A": "1"}, memory=256),
                    Call(id="1", app_id="a", fn_id="f", image="i2", config={"A": "1"})):
        assert slot_key(changed) != slot_key(base)


def test_call_json_from_a_shared_part_is_the_same_call():
    shared_by_fn = Call(id="1", app_id="a", fn_id="f", image="i", cpus=250, config={"A": "1"}, annotations={"x/y": [1]})
    call = attrs.evolve(shared_by_fn, id="2", headers={"X": ["y"]}, url="http://h/invoke/f", created_at="now")
    text = call.to_json(shared_by_fn.shared_json())
    assert json.loads(text) == json.loads(call.to_json())
    assert Call.from_json(text) == call
