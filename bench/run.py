"""fn-core benchmark suite: every figure beside its floor, in one run, on 127.0.0.1 with real Docker.

`make bench` (= `bash scripts/bench.sh`) or `.venv-bench/bin/python bench/run.py [--quick] [--only warm,cold,...]`

Writes bench/results/<UTC date>/report.json, the PNG plots and README.md (machine, command, reading).
Every process and container it starts is stopped and removed, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

import docker
from fnbench import cold, grpc_floor, large, loadgen, machine, memory, placement, plots, report, warm
from fnbench.common import remove_labelled

from fn_core.images import build_named_function

SCENARIOS = ("warm", "cold", "large", "memory", "placement")
IMAGE = "fn-core-bench/echo:latest"

# Sizes: full vs --quick (development).
SIZES = {
    "full": {"seq_calls": 2000, "duration_s": 10.0, "cold_runs": 10, "memory_calls": 100_000, "placement_calls": 3000,
             "placement_limit_s": 120.0, "large_calls": 20},
    "quick": {"seq_calls": 300, "duration_s": 3.0, "cold_runs": 3, "memory_calls": 5_000, "placement_calls": 300,
              "placement_limit_s": 60.0, "large_calls": 5},
}


async def run_one(name: str, scenarios: dict[str, object], client, run_tag: str, image: str, size: dict,
                  args: argparse.Namespace) -> None:
    t0, load_before = time.monotonic(), os.getloadavg()[0]
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    tag = f"{run_tag}{name[:2]}"
    if name == "warm":
        levels = (1, 4, 16)
        scenarios["warm"] = {
            topo: await warm.run_topology(client, tag + topo[:2], topo, image, calls=size["seq_calls"],
                                          duration_s=size["duration_s"], levels=levels, force_asyncio=args.asyncio)
            for topo in ("serve", "split")
        }
        # what the split topology's gRPC hop alone costs: a bare Engage exchange, no HTTP, no container
        scenarios["warm"]["split"]["floor_grpc_engage"] = await asyncio.to_thread(  # type: ignore[index]
            grpc_floor.measure, {1: size["seq_calls"], 16: size["seq_calls"] * 4})
    elif name == "cold":
        scenarios["cold"] = await cold.run(tag, image, runs=size["cold_runs"])
    elif name == "large":
        scenarios["large"] = await large.run(tag, image, calls=size["large_calls"])
    elif name == "memory":
        scenarios["memory"] = await memory.run(tag, image, calls=size["memory_calls"], force_asyncio=args.asyncio)
    elif name == "placement":
        scenarios["placement"] = await placement.run(tag, image, calls=size["placement_calls"],
                                                     limit_s=size["placement_limit_s"])
    # The 1-min load average around each scenario: a busy (shared) machine shows here.
    scenarios.setdefault("loadavg_1min", {})[name] = {"before": load_before, "after": os.getloadavg()[0],  # type: ignore[index]
                                                       "seconds": round(time.monotonic() - t0)}
    print(f"bench: {name} done in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)


async def run_all(args: argparse.Namespace, run_tag: str, out: Path) -> dict[str, object]:
    size = SIZES["quick" if args.quick else "full"]
    if args.placement_calls:
        size["placement_calls"] = args.placement_calls
    if args.memory_calls:
        size["memory_calls"] = args.memory_calls
    # SIGTERM / SIGINT cancel the run, so every `finally` stops its processes and removes its containers.
    # (SIGINT too: a shell's background job starts with SIGINT ignored.)
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    client = docker.from_env()
    image = build_named_function(client, "echo", IMAGE)
    result: dict[str, object] = {
        "suite_version": 1,
        "run_tag": run_tag,
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "make bench" + (" ARGS=" + shlex.quote(" ".join(sys.argv[1:])) if sys.argv[1:] else ""),  # = scripts/bench.sh ARGS
        "argv": sys.argv[1:],
        "size": size,
        "machine": machine.describe(),
        "image": image,
    }
    scenarios: dict[str, object] = {}
    previous = out / "report.json"
    if args.only and previous.exists():  # a subset run updates those scenarios of the dir's report, keeps the rest
        earlier = json.loads(previous.read_text())
        scenarios.update(earlier.get("scenarios", {}))
        result["earlier_runs"] = [*earlier.get("earlier_runs", []),
                                  {k: earlier.get(k) for k in ("command", "started_utc", "machine")}]
    result["scenarios"] = scenarios
    wanted = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    try:
        scenarios["load_generator"] = await loadgen.generator_cost(min(size["duration_s"], 5.0), args.asyncio)
        for name in wanted:
            try:
                await run_one(name, scenarios, client, run_tag, image, size, args)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                scenarios[name] = {"error": f"{type(exc).__name__}: {exc}"}
            (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")  # partial results survive a crash
    finally:
        removed = remove_labelled(client, run_tag)
        if removed:
            print(f"bench: removed {removed} leftover container(s) of this run", file=sys.stderr)
        client.close()
    result["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run for development (minutes, not a quarter hour)")
    parser.add_argument("--only", help=f"comma list of scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--asyncio", action="store_true", help="use the asyncio load generator even when wrk is present")
    parser.add_argument("--placement-calls", type=int, help="calls per placer in the placement study")
    parser.add_argument("--memory-calls", type=int, help="calls in the memory flatness run")
    parser.add_argument("--out", type=Path, help="output dir [bench/results/<UTC date>]")
    parser.add_argument("--replot", type=Path, metavar="DIR", help="only redraw the plots and README of DIR/report.json")
    args = parser.parse_args()
    if args.replot:
        result = json.loads((args.replot / "report.json").read_text())
        reading = args.replot / "reading.md"  # an optional hand-written reading, kept across redraws
        report.write_readme(result, args.replot, plots.make_all(result, args.replot),
                            reading.read_text() if reading.exists() else "")
        return
    run_tag = f"fnb{secrets.token_hex(2)}"  # container label prefix of this run (and nothing else)
    out = args.out or Path(__file__).parent / "results" / dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_all(args, run_tag, out))
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    pngs = plots.make_all(result, out)
    report.write_readme(result, out, pngs)
    print(f"bench: wrote {out}/report.json, README.md and {len(pngs)} plots", file=sys.stderr)


if __name__ == "__main__":
    main()
