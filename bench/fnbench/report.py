"""README.md of a results dir: machine, command, issue 6's targets with measured values, tables, plots."""

from __future__ import annotations

from pathlib import Path


def _get(d: object, *keys: str, default: object = None) -> object:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def targets(sc: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target of issue 6 that this run measured."""
    rows: list[tuple[str, str, str]] = []
    for topo, label in (("serve", "serve: LB and runner in one process"), ("split", "lb + runner, gRPC between them")):
        w = _get(sc, "warm", topo)
        if not (isinstance(w, dict) and "ratio_p50" in w):
            continue
        seq, floor = w["sequential_raw_client"], w["floor_direct_uds"]
        wrk1 = _get(w, "levels", "1", "e2e", "p50_ms")
        rows.append((f"warm sequential p50 <= 2.5x direct unix-socket p50 ({label})",
                     f"{seq['p50_ms']:.2f} ms vs {floor['p50_ms']:.2f} ms = {w['ratio_p50']}x (same raw client, interleaved); "
                     f"wrk c1 p50 {wrk1} ms = {w.get('ratio_p50_wrk_c1_vs_floor')}x", _yes(w["ratio_p50"] <= 2.5)))
        rows.append((f"warm sequential p99 <= 3x its p50 ({topo})", f"p99 {seq['p99_ms']:.2f} ms = {w['ratio_p99_to_own_p50']}x p50",
                     _yes(w["ratio_p99_to_own_p50"] <= 3)))
        c16 = _get(w, "levels", "16", "e2e")
        if c16:
            rows.append((f">= 1400 req/s at 16 clients, no error ({topo})",
                         f"{c16['throughput_per_s']} req/s, {c16['errors']} errors (p50 {c16['p50_ms']} ms, p99 {c16['p99_ms']} ms)",
                         _yes(c16["throughput_per_s"] >= 1400 and c16["errors"] == 0)))
        floors = w.get("floor_grpc_engage")
        for stack, what in (("transport", "fn_core.transport, what split speaks"), ("grpcio", "grpc.aio, for comparison")):
            g = floors.get(stack) if isinstance(floors, dict) else None
            if isinstance(g, dict) and "1" in g and "16" in g:
                rows.append((f"(split's floor: a bare Engage exchange between two processes over {what}; no HTTP, no container)",
                             f"p50 {g['1']['p50_ms']} ms sequential; {g['16']['throughput_per_s']} req/s at 16 clients",
                             "bounds split" if stack == "transport" else "-"))
    c = sc.get("cold")
    if isinstance(c, dict) and "e2e_median" in c:
        rows.append(("cold call <= docker create+start+ready + 30 ms",
                     f"{c['e2e_median']['total_ms']} ms vs {c['docker_create_start_ready_ms']} ms "
                     f"({c['e2e_minus_create_start_ready_ms']:+} ms)", _yes(c["e2e_minus_create_start_ready_ms"] <= 30)))
        pool = c.get("prefork")  # older reports have no prefork variant
        if isinstance(pool, dict) and "e2e_median" in pool:
            rows.append(("(informative, not a target: the same cold call with the prefork pool, "
                         "FN_EXPERIMENTAL_PREFORK_POOL_SIZE)",
                         f"{pool['e2e_median']['total_ms']} ms vs {c['e2e_median']['total_ms']} ms with its own network "
                         f"({pool['e2e_minus_own_network_ms']:+} ms); vs create+start+ready "
                         f"{pool['e2e_minus_create_start_ready_ms']:+} ms; {pool['calls_in_donor_namespace']} of "
                         f"{len(pool['e2e_runs'])} calls in a donor's namespace", "-"))
    p = _get(sc, "placement", "placers")
    if isinstance(p, dict) and "ch" in p and "naive" in p:
        ch, naive = p["ch"], p["naive"]
        steady = ch.get("warm_hit_rate_steady")
        whole = f"{ch['warm_hit_rate'] * 100:.1f}% over all {ch['calls']} calls, first starts included"
        rows.append(("ch warm-hit >= 99% (steady multi-function)",
                     whole if steady is None else f"{steady * 100:.1f}% after the first third of the calls; {whole}",
                     _yes((ch["warm_hit_rate"] if steady is None else steady) >= 0.99)))
        rows.append(("ch starts <= 1/2 of naive's containers", f"{ch['containers_started']} vs {naive['containers_started']}",
                     _yes(ch["containers_started"] * 2 <= naive["containers_started"])))
    m = sc.get("memory")
    if isinstance(m, dict) and "growth_mb" in m:
        g = m["growth_mb"]
        rows.append(("LB and runner memory flat over 100k calls",
                     f"{m['calls']} calls: lb {g['lb']:+} MB, runner {g['runner']:+} MB "
                     f"(second half {m['second_half_growth_mb']['lb']:+} / {m['second_half_growth_mb']['runner']:+} MB)",
                     # flat: no growth left in the second half (warm-up effects are over by then)
                     _yes(max(m["second_half_growth_mb"].values()) <= 1.0) if m["calls"] >= 100_000 else "not at 100k"))
    big = _get(sc, "large", "small_in_5MB_out")
    if isinstance(big, dict):
        lb = big["rss_mb"]["lb"]
        rows.append(("a 5 MB response costs <= ~2x its size in LB memory",
                     f"LB peak {lb['peak']} MB - before {lb['before']} MB = {lb['peak_minus_before']} MB "
                     f"= {big['lb_peak_growth_per_response_size']}x 5 MB", _yes(big["lb_peak_growth_per_response_size"] <= 2)))
    return rows


def _pct(rate: float | None) -> str:
    return "" if rate is None else f"{rate * 100:.1f}%"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _levels_table(warm: dict) -> list[str]:
    lines = ["| topology | clients | e2e p50 ms | e2e p99 ms | e2e req/s | errors | floor p50 ms | floor p99 ms | floor req/s | hot containers | started while measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for topo in ("serve", "split"):
        for c, lv in _get(warm, topo, "levels", default={}).items():
            e, f = lv["e2e"], lv["floor_direct_uds"]
            lines.append(f"| {topo} | {c} | {e['p50_ms']} | {e['p99_ms']} | {e['throughput_per_s']} | {e['errors']} | "
                         f"{f['p50_ms']} | {f['p99_ms']} | {f['throughput_per_s']} | {lv['hot_containers']} | "
                         f"{e.get('containers_started', '')} |")
    return lines


def _placement_table(p: dict) -> list[str]:
    lines = ["| placer | calls | req/s | p50 ms | p99 ms | errors | containers started | warm-hit | warm-hit steady | "
             "calls per runner | reserved MB end / peak |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in p["placers"].items():
        lines.append(f"| {name} | {r['calls']} | {r['throughput_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
                     f"{r['containers_started']} | {r['warm_hit_rate'] * 100:.1f}% | "
                     f"{_pct(r.get('warm_hit_rate_steady'))} | {'/'.join(map(str, r['calls_per_runner']))} | "
                     f"{r['memory_reserved_mb_end']} / {r['memory_reserved_mb_peak']} |")
    lines.append("| Fn Go ch (issue 6) | 3000 | 11.7 | 154 | 2514 | | 36 | 98.8% | | 888/0/2175 | |")
    lines.append("| Fn Go naive (issue 6) | 3000 | 8.3 | 713 | | | 34 | 98.9% | | | |")
    return lines


def _cold_table(c: dict) -> list[str]:
    """The cold call's parts (medians, ms): the direct launch, then each end-to-end variant of the run."""
    d = c["direct_launch_median"]
    lines = ["| variant | until create | create -> start | start -> response | total |", "|---|---|---|---|---|",
             f"| direct launch (floor: create {d['create_ms']} + start {d['start_ms']} + ready {d['ready_ms']} + "
             f"first response {d['first_response_ms']}) | | | | {d['total_ms']} |"]
    variants = [("cold, own network", c["e2e_median"])]
    pool = c.get("prefork")  # older reports have no prefork variant
    if isinstance(pool, dict) and "e2e_median" in pool:
        variants.append((f"cold, prefork pool ({pool['pool_size']} donors; {pool['calls_in_donor_namespace']} of "
                         f"{len(pool['e2e_runs'])} calls in a donor's namespace)", pool["e2e_median"]))
    for name, e in variants:
        lines.append(f"| {name} | {e['to_create_ms']} | {e['create_to_start_ms']} | {e['start_to_response_ms']} | "
                     f"{e['total_ms']} |")
    if isinstance(pool, dict) and "error" in pool:
        lines.append(f"| cold, prefork pool: failed ({pool['error']}) | | | | |")
    return lines


def write_readme(result: dict, out: Path, pngs: list[str], reading: str = "") -> None:
    m, sc = result["machine"], result["scenarios"]
    lines = [
        f"# fn-core benchmark results, {result['started_utc']}",
        "",
        f"Made by `{result['command']}` (`bench/run.py`, size {'quick' if '--quick' in result['argv'] else 'full'}: "
        f"`{result['size']}`), fn-core commit `{m['fn_core_commit']}`{' (with local changes)' if m['fn_core_dirty'] else ''}.",
        *[f"Scenarios not in that command's `--only` list come from `{e['command']}` started {e['started_utc']} "
          f"(commit `{_get(e, 'machine', 'fn_core_commit')}`)." for e in result.get("earlier_runs", [])],
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}, "
        f"Docker {m['docker']}, Python {m['python']}{_interpreter(m)}, load generator {m['wrk'] or 'asyncio client'}. Everything on 127.0.0.1; "
        "the load generator shares the 2 cores with the platform and Docker.",
        "",
        "## Issue 6 targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {t} | {v} | {ok} |" for t, v, ok in targets(sc)],
        "",
    ]
    if reading:
        lines += ["## Reading", "", reading.strip(), ""]
    lg = sc.get("load_generator")
    if isinstance(lg, dict) and "c1" in lg:
        lines += [f"Load generator's own ceiling ({lg['tool']} against a null HTTP server): 1 client p50 {lg['c1']['p50_ms']} ms, "
                  f"{lg['c1']['throughput_per_s']} req/s; 16 clients {lg['c16']['throughput_per_s']} req/s.", ""]
    if isinstance(sc.get("warm"), dict) and "serve" in sc["warm"]:
        lines += ["## Warm calls beside the floor", "", *_levels_table(sc["warm"]), ""]
    c = sc.get("cold")
    if isinstance(c, dict) and "e2e_median" in c:
        lines += [f"## Cold calls (medians of {c['runs']}, ms; end to end: Docker events split, each a new fn "
                  "through lb -> runner)", "", *_cold_table(c), ""]
    if isinstance(sc.get("placement"), dict) and "placers" in sc["placement"]:
        lines += ["## Placement study (20 fns x 3 runners, Zipf(1.1), 8 clients)", "", *_placement_table(sc["placement"]), ""]
    big = sc.get("large")
    if isinstance(big, dict) and "error" not in big:
        lines += ["## Large bodies (lb + runner RSS, MB)", "", "| case | e2e p50 ms | floor p50 ms | lb before/peak/after | "
                  "runner before/peak/after |", "|---|---|---|---|---|"]
        for name, r in big.items():
            lb, rn = r["rss_mb"]["lb"], r["rss_mb"]["runner"]
            lines.append(f"| {name} | {r['e2e']['p50_ms']} | {r['floor_direct_uds']['p50_ms']} | "
                         f"{lb['before']}/{lb['peak']}/{lb['after']} | {rn['before']}/{rn['peak']}/{rn['after']} |")
        lines.append("")
    la = sc.get("loadavg_1min")
    if isinstance(la, dict):
        lines += ["1-minute load average before / after each scenario (2 cores; above ~3 means something else ran too): "
                  + ", ".join(f"{k} {v['before']:.1f}/{v['after']:.1f} ({v['seconds']} s)" for k, v in la.items()), ""]
    errors = {k: v["error"] for k, v in sc.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["## Scenarios that failed", "", *[f"- {k}: {v}" for k, v in errors.items()], ""]
    lines += ["## Plots", "", *[f"![{p}]({p})" for p in pngs], "", "All figures: `report.json`."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _interpreter(machine: dict) -> str:
    """Which Python build ran the nodes (a report before it was recorded says nothing)."""
    path = machine.get("python_executable")
    return f" (`{path}`)" if path else ""
