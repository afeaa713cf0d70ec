"""What the nodes' Prometheus metrics share: a latency histogram in the text exposition format."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Observations in `LATENCY_BUCKETS_S`, rendered as ``name_bucket``/``_sum``/``_count`` samples."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, value_s)] += 1
        self.total += value_s
        self.count += 1

    def samples(self, name: str, labels: str = "") -> list[str]:
        """The sample lines; ``labels`` (e.g. ``route="/v2/apps"``, each value through `label_value`) go before ``le``."""
        prefix = f"{labels}," if labels else ""
        lines = []
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self.counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{{prefix}le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braces} {self.total}")
        lines.append(f"{name}_count{braces} {self.count}")
        return lines


#: a metric family: name, type (counter, gauge, histogram), help text, sample lines
Family = tuple[str, str, str, list[str]]


def exposition(families: list[Family]) -> str:
    """The families in the text format: each one's HELP and TYPE lines, then its samples."""
    lines = [line for name, kind, text, samples in families for line in (f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples)]
    return "\n".join(lines) + "\n"


def label_value(value: object) -> str:
    """``value`` escaped for the inside of a label's quotes, as the text format asks: one stray quote or
    newline (an app's name, a route) would otherwise make the whole scrape unreadable."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def by_label(name: str, label: str, counts: Mapping[Any, int], labels: str = "") -> list[str]:
    """A sample per ``counts`` entry, the key as the value of ``label``; ``labels`` (e.g. ``fn_id="x"``, each value
    through `label_value`) go before it."""
    prefix = f"{labels}," if labels else ""
    return [f'{name}{{{prefix}{label}="{label_value(key)}"}} {value}' for key, value in counts.items()]
