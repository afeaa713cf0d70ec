"""The built-in placers' orderings (fast, no servers): ch sticks, naive rotates."""

from collections import Counter

from fn_core.config import load_config
from fn_core.models import Call
from fn_core.plugins import get_plugin_manager
from fn_core.records import RunnerRef
from fn_plugins_builtin.placer_ch import fn_hash, jump_hash, siphash24

RUNNERS = [RunnerRef(address=f"r{i}:9190") for i in range(3)]


def placer(name):
    return get_plugin_manager(load_config(env={"FN_PLACER": name}), load_entrypoints=False).hook.place_call


def test_siphash24_matches_the_reference_vectors():
    k0, k1 = 0x0706050403020100, 0x0F0E0D0C0B0A0908
    assert siphash24(b"", k0, k1) == 0x726FDB47DD0E0E31
    assert siphash24(bytes(range(15)), k0, k1) == 0xA129CA6149BE45E5


def test_jump_hash_moves_few_keys_when_a_bucket_is_added():
    moved = sum(jump_hash(k * 0x9E3779B97F4A7C15 % 2**64, 10) != jump_hash(k * 0x9E3779B97F4A7C15 % 2**64, 11) for k in range(2000))
    assert moved < 2000 * 0.15  # ideal is 1/11 of the keys


def test_ch_sends_every_call_of_a_function_to_the_same_runner_first_then_walks_on():
    place = placer("ch")
    orders = {tuple(r.address for r in place(call=Call(id=str(i), fn_id="fn-A"), runners=RUNNERS)) for i in range(50)}
    assert len(orders) == 1
    (order,) = orders
    start = [r.address for r in RUNNERS].index(order[0])
    assert list(order) == [RUNNERS[(start + i) % 3].address for i in range(3)]


def test_ch_spreads_different_functions_over_runners():
    place = placer("ch")
    firsts = Counter(place(call=Call(id="1", fn_id=f"fn-{i}"), runners=RUNNERS)[0].address for i in range(300))
    assert len(firsts) == 3 and min(firsts.values()) > 50


def test_naive_rotates_the_first_runner_over_all_runners():
    place = placer("naive")
    firsts = [place(call=Call(id=str(i), fn_id="fn-A"), runners=RUNNERS)[0].address for i in range(30)]
    assert Counter(firsts) == {r.address: 10 for r in RUNNERS}


def test_placers_return_no_runners_for_an_empty_pool():
    assert placer("ch")(call=Call(id="1", fn_id="f"), runners=[]) == []
    assert placer("naive")(call=Call(id="1", fn_id="f"), runners=[]) == []


def test_jump_hash_spreads_functions_over_every_runner():
    # the paper's hash; Fn's integer-division variant would give every function of a 2-runner pool the first runner
    for runners in (2, 3, 5):
        homes = [jump_hash(fn_hash(f"01FN{i:022d}"), runners) for i in range(3000)]
        shares = [homes.count(r) / len(homes) for r in range(runners)]
        assert all(abs(share - 1 / runners) < 0.05 for share in shares), shares
