"""PNG plots of a report (matplotlib, Agg): each end-to-end figure drawn beside its floor."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FN_GO = {"throughput": {1: 810, 4: 1337, 16: 1369}, "p50": {1: 1.13, 4: 2.75, 16: 9.8}}


def _save(fig, out: Path, name: str, made: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    made.append(name)


def latency(warm: dict, out: Path, made: list[str]) -> None:
    topos = [t for t in ("serve", "split") if isinstance(warm.get(t), dict) and "levels" in warm[t]]
    fig, axes = plt.subplots(1, len(topos), figsize=(6 * len(topos), 4.2), squeeze=False)
    for ax, topo in zip(axes[0], topos, strict=False):
        levels = warm[topo]["levels"]
        xs = [int(c) for c in levels]
        for key, style, label in (("e2e", "-o", "end to end (wrk)"), ("floor_direct_uds", "--s", "floor: direct unix socket")):
            for q, alpha in (("p50_ms", 1.0), ("p99_ms", 0.5)):
                ax.plot(xs, [levels[str(c)][key][q] for c in xs], style, alpha=alpha, label=f"{label} {q[:3]}")
        ax.plot(list(FN_GO["p50"]), list(FN_GO["p50"].values()), ":^", color="gray", label="Fn Go server p50 (issue 6)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("concurrent keep-alive clients")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title({"serve": "fn-core serve (one process)", "split": "fn-core lb + fn-core runner"}[topo])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, out, "latency_by_concurrency.png", made)


def throughput(warm: dict, out: Path, made: list[str]) -> None:
    topos = [t for t in ("serve", "split") if isinstance(warm.get(t), dict) and "levels" in warm[t]]
    levels = [int(c) for c in warm[topos[0]]["levels"]]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    series = [(f"{t} end to end", [warm[t]["levels"][str(c)]["e2e"]["throughput_per_s"] for c in levels]) for t in topos]
    series.append((f"floor: direct unix socket ({topos[-1]} containers)",
                   [warm[topos[-1]]["levels"][str(c)]["floor_direct_uds"]["throughput_per_s"] for c in levels]))
    series.append(("Fn Go server (issue 6)", [FN_GO["throughput"].get(c, 0) for c in levels]))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [j + i * width for j in range(len(levels))]
        bars = ax.bar(xs, values, width, label=label, color="gray" if "Fn Go" in label else None)
        ax.bar_label(bars, [f"{v:.0f}" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(levels))], [f"{c} clients" for c in levels])
    ax.set_ylabel("calls per second")
    ax.set_title("Warm throughput by concurrency (wrk, 16-byte POST)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, out, "throughput_by_concurrency.png", made)


def cold(c: dict, out: Path, made: list[str]) -> None:
    d = c["direct_launch_median"]

    def e2e(e: dict) -> list[tuple[str, float]]:
        return [("LB + runner until create", e["to_create_ms"]), ("create -> start event", e["create_to_start_ms"]),
                ("start event -> response", e["start_to_response_ms"])]

    rows = [
        ("direct launch\n(runner's driver options)",
         [("docker create", d["create_ms"]), ("docker start", d["start_ms"]), ("start -> socket ready", d["ready_ms"]),
          ("first response", d["first_response_ms"])]),
        ("cold, own network\n(through LB, Docker events split)", e2e(c["e2e_median"])),
    ]
    pool = c.get("prefork")  # older reports have no prefork variant
    if isinstance(pool, dict) and "e2e_median" in pool:
        rows.append((f"cold, prefork pool\n({pool['pool_size']} donors, same split)", e2e(pool["e2e_median"])))
    colors: dict[str, str] = {}  # one colour per part, one legend entry per part
    fig, ax = plt.subplots(figsize=(9, 1.5 * len(rows) + 1.4))
    for y, (_, parts) in enumerate(rows):
        left = 0.0
        for label, ms in parts:
            new = label not in colors
            colors.setdefault(label, f"C{len(colors)}")
            ax.barh(y, ms, left=left, label=label if new else None, color=colors[label])
            if ms > 25:
                ax.text(left + ms / 2, y, f"{ms:.0f}", ha="center", va="center", fontsize=8)
            left += ms
        ax.text(left + 5, y, f"{left:.0f} ms", va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()  # top to bottom in the order above
    ax.set_xlabel("ms (median)")
    ax.set_title(f"Cold start: create -> ready -> first response (median of {c['runs']})")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.45, -0.18))
    ax.set_xlim(0, max(sum(ms for _, ms in r[1]) for r in rows) * 1.25)
    _save(fig, out, "cold_start_breakdown.png", made)


def placement(p: dict, out: Path, made: list[str]) -> None:
    placers = p["placers"]
    names = list(placers)
    ref = p.get("fn_go_reference", {})
    metrics = [("warm_hit_rate", "warm-hit rate, all calls (%)", 100),
               ("warm_hit_rate_steady", "warm-hit after the first third (%)", 100),
               ("containers_started", "containers started", 1), ("p99_ms", "p99 (ms)", 1), ("throughput_per_s", "calls / s", 1)]
    metrics = [m for m in metrics if all(m[0] in placers[n] for n in names)]  # older reports lack the steady rate
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.5 * len(metrics), 3.8))
    for ax, (key, label, scale) in zip(axes, metrics, strict=False):
        values = [placers[n][key] * scale for n in names]
        bars = ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:green"][: len(names)])
        ax.bar_label(bars, [f"{v:.1f}" if scale == 100 else f"{v:.0f}" for v in values], fontsize=8)
        for i, n in enumerate(names):
            if key in ref.get(n, {}):
                ax.plot(i, ref[n][key] * scale, "k_", markersize=22, mew=2)
        ax.set_title(label)
        ax.grid(True, axis="y", alpha=0.3)
    calls = ", ".join(f"{n} {placers[n]['calls']}" for n in names)
    fig.suptitle(f"Placement: 20 fns x 3 runners, Zipf(1.1), 8 clients (calls: {calls}); black bar = Fn Go", fontsize=10)
    _save(fig, out, "placement_comparison.png", made)


def memory(m: dict, out: Path, made: list[str]) -> None:
    s = m["samples"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    calls = [r["calls"] / 1000 for r in s]
    for name in ("lb", "runner"):
        ax.plot(calls, [r[f"{name}_rss_mb"] for r in s], "-o", markersize=3, label=f"fn-core {name} VmRSS")
    ax.set_xlabel("warm calls done (thousands)")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(0, max(max(r["lb_rss_mb"], r["runner_rss_mb"]) for r in s) * 1.3)
    ax.set_title(f"Memory over a long warm run ({m['calls']} calls, growth lb {m['growth_mb']['lb']} MB, "
                 f"runner {m['growth_mb']['runner']} MB)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, out, "memory_over_time.png", made)


def make_all(result: dict, out: Path) -> list[str]:
    made: list[str] = []
    sc = result.get("scenarios", {})
    ok = {k: v for k, v in sc.items() if isinstance(v, dict) and "error" not in v}
    if "warm" in ok:
        latency(ok["warm"], out, made)
        throughput(ok["warm"], out, made)
    for name, draw in (("cold", cold), ("placement", placement), ("memory", memory)):
        if name in ok:
            draw(ok[name], out, made)
    return made
