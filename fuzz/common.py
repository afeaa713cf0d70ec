"""What every fuzzer here shares: its command line, its budget, and how it reports what broke the contract."""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.reporting import with_reporter

SHOWN = 5  # findings printed in full when a run fails


def begin(name: str, doc: str, cases: int, seconds: float) -> tuple[argparse.Namespace, Budget, Findings]:
    """A fuzzer's start: its command line (`parse_args`), its budget from now, and where its findings go."""
    args = parse_args(doc, cases, seconds)
    budget = Budget(args.cases, args.seconds)
    return args, budget, Findings(name, budget)


def parse_args(doc: str, cases: int, seconds: float) -> argparse.Namespace:
    """`--cases N --seconds S --seed K`: the defaults are sized for ~1-2 minutes on a 2-core machine."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--cases", type=int, default=cases, help=f"most cases to run (default {cases})")
    parser.add_argument("--seconds", type=float, default=seconds, help=f"wall-clock limit (default {seconds:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generators: the same seed, the same cases")
    return parser.parse_args()


class Budget:
    """A case count and a wall-clock limit: whichever ends first ends the run."""

    def __init__(self, cases: int, seconds: float) -> None:
        self.cases, self.seconds = cases, seconds
        self.start = time.monotonic()
        self.done = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> bool:
        return self.done < self.cases and self.elapsed < self.seconds

    def take(self) -> None:
        """Count one more case, or end the hypothesis test running it (`generate`) when the budget is spent."""
        if not self.left():
            raise OutOfBudget
        self.done += 1

    def share(self, fraction: float) -> int:
        """A part of the cases, for a fuzzer that runs several hypothesis tests one after the other."""
        return max(1, int(self.cases * fraction))


class OutOfBudget(BaseException):
    """Raised by `Budget.take` to end a hypothesis test early: a BaseException, so that hypothesis lets it through."""


def generate(test, max_examples: int, seed: int) -> None:
    """Run a hypothesis test as a generator of cases: the run's seed, no shrinking (a finding is recorded, not
    raised), no example database, no deadline (a case may wait on a socket); ended by `OutOfBudget`, silently."""
    test = hypothesis.seed(seed)(settings(max_examples=max_examples, deadline=None, database=None, phases=[Phase.generate],
                                          suppress_health_check=list(HealthCheck))(test))
    try:
        with with_reporter(lambda _: None):  # not hypothesis's "you can reproduce this failure" for OutOfBudget
            test()
    except OutOfBudget:
        pass


class Findings:
    """Cases that broke the contract, one example kept per signature (what broke, where)."""

    def __init__(self, name: str, budget: Budget) -> None:
        self.name, self.budget = name, budget
        self.examples: dict[str, Any] = {}
        self.count = 0

    def add(self, signature: str, case: Any, detail: str = "") -> None:
        self.count += 1
        if signature not in self.examples:
            self.examples[signature] = (case, detail)
            print(f"[{self.name}] finding: {signature}", file=sys.stderr, flush=True)

    def exception(self, what: str, exc: BaseException, case: Any) -> None:
        self.add(f"{what}: {exception_signature(exc)}", case, "".join(traceback.format_exception(exc))[-2000:])

    def report(self, extra: str = "") -> int:
        """The one-line summary, then the first findings in full; the exit code (1: something broke the contract)."""
        print(f"{self.name}: {self.budget.done} cases in {self.budget.elapsed:.0f} s, {self.count} findings "
              f"({len(self.examples)} distinct){', ' + extra if extra else ''}")
        for signature, (case, detail) in list(self.examples.items())[:SHOWN]:
            print(f"\n--- {signature}\ninput: {shorten(case)}")
            if detail:
                print(detail.rstrip())
        return 1 if self.examples else 0


def exception_signature(exc: BaseException) -> str:
    """The exception's type and the last line of fn-core's code it passed through: one signature per bug, not per input."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/fn_core/" in f.filename] or frames
    where = f"{ours[-1].filename.rsplit('/', 1)[-1]}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def shorten(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def mutate(rnd: random.Random, data: bytes, edits: int = 4) -> bytes:
    """Flip, overwrite, insert, delete or duplicate a few bytes, or cut the end: what a broken peer sends."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, edits)):
        op, i = rnd.random(), rnd.randrange(len(b) + 1)
        if op < 0.3 and b:
            b[min(i, len(b) - 1)] ^= 1 << rnd.randrange(8)
        elif op < 0.5 and b:
            b[min(i, len(b) - 1)] = rnd.choice([0, 0xFF, 0x7F, 0x80, 1, 5, rnd.getrandbits(8)])
        elif op < 0.65:
            b[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op < 0.8 and b:
            del b[i:i + rnd.randint(1, 8)]
        elif op < 0.92 and b:
            j = rnd.randrange(len(b))
            b[i:i] = b[j:j + rnd.randint(1, 40)]
        else:
            del b[i:]
    return bytes(b)
