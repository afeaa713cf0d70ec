"""What the nodes' Prometheus metrics share: a latency histogram in the text exposition format."""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Mapping
from typing import Any

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Observations in `LATENCY_BUCKETS_S`, rendered as ``name_bucket``/``_sum``/``_count`` samples."""

    __slots__ = ("counts", "total", "count", "_heads")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total = 0.0
        self.count = 0
        self._heads: tuple[str, str, list[str]] | None = None  # (name, labels, each sample's text before its value)

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, value_s)] += 1
        self.total += value_s
        self.count += 1

    def samples(self, name: str, labels: str = "") -> list[str]:
        """The sample lines; ``labels`` (e.g. ``route="/v2/apps"``, each value through `label_value`) go before ``le``."""
        heads = self._heads
        if heads is None or heads[0] != name or heads[1] != labels:  # made once: a scrape writes only the numbers
            heads = self._heads = (name, labels, _sample_heads(name, labels))
        buckets, sum_head, count_head = heads[2][:-2], heads[2][-2], heads[2][-1]
        lines = [head + str(cumulative) for head, cumulative in zip(buckets, itertools.accumulate(self.counts), strict=True)]
        lines.append(sum_head + str(self.total))
        lines.append(count_head + str(self.count))
        return lines


def _sample_heads(name: str, labels: str) -> list[str]:
    prefix = f"{labels}," if labels else ""
    braces = f"{{{labels}}}" if labels else ""
    bounds = [*(str(bound) for bound in LATENCY_BUCKETS_S), "+Inf"]
    return [*(f'{name}_bucket{{{prefix}le="{bound}"}} ' for bound in bounds), f"{name}_sum{braces} ", f"{name}_count{braces} "]


#: a metric family: name, type (counter, gauge, histogram), help text, sample lines
Family = tuple[str, str, str, list[str]]

#: the Content-Type of `exposition`'s text, as Prometheus' text format 0.0.4 names it (and Fn's promhttp sends it):
#: a scraper that negotiates formats reads the version there
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


# --- checking the families of plugins (`metric_families`): one bad line would make a scraper drop the whole page ------
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
METRIC_TYPES = frozenset(("counter", "gauge", "histogram", "summary", "untyped"))
#: the core's families: the LB's, the runner's, the API's and the process collectors' (``fn_process_*``,
#: ``<command>_process_*`` of FN_PROCESS_COLLECTOR_LIST); a plugin's family may not be named so
CORE_FAMILY_PREFIXES = ("fn_lb_", "fn_runner_", "fn_api_", "fn_process_")
CORE_PROCESS_FAMILY = re.compile(
    r"(?:.*_)?process_(?:cpu_seconds_total|open_fds|max_fds|virtual_memory_bytes|resident_memory_bytes|start_time_seconds)"
)
#: a label's value: runs of plain characters between the format's escapes (unrolled, not a per-character alternation:
#: 2-3x faster, and a scrape of 1000 fns' series checks ~20k lines on the LB's event loop)
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"[^"\\\n]*(?:\\[\\"n][^"\\\n]*)*"'
#: a sample's value: the float forms Go's ParseFloat and Python's float agree on
_VALUE = r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
SAMPLE_VALUE = re.compile(_VALUE)
#: name, optional labels (together: the series), a value, optional timestamp
SAMPLE_LINE = re.compile(
    rf"(?P<series>(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{{[ \t]*(?:{_LABEL}[ \t]*(?:,[ \t]*{_LABEL}[ \t]*)*,?[ \t]*)?\}})?)"
    rf"[ \t]+{_VALUE}(?P<timestamp>[ \t]+-?[0-9]+)?[ \t]*"
)
#: `family_problem`'s memo of well-formed series (text before the value -> metric name) is emptied past this size
KNOWN_SERIES_MAX = 100_000  # fn-metrics at its 1000 fns: ~21k
#: HELP text: one line, backslashes only as the format's escapes (``\\`` and ``\n``)
HELP_TEXT = re.compile(r"(?:[^\\\n]|\\[\\n])*")
_SAMPLE_SUFFIXES = {"histogram": ("", "_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def is_core_family(name: str) -> bool:
    """Whether ``name`` is, or may be, one of the core's families (`CORE_FAMILY_PREFIXES`, the process collectors')."""
    return name.startswith(CORE_FAMILY_PREFIXES) or CORE_PROCESS_FAMILY.fullmatch(name) is not None


def family_problem(family: Family, known_series: dict[str, str] | None = None) -> tuple[str, str] | None:
    """What makes ``family`` unfit for the text format, as ``(kind, what)``; None when it is fit.

    ``kind`` is one word (name, type, help, sample) to tell problems apart without their changing values.
    ``known_series``: a memo kept from scrape to scrape (a plugin's series repeat, their values change): a line
    ``<series> <value>`` whose series was found well-formed before needs only its value checked, ~3x quicker."""
    name, kind, text, samples = family
    if METRIC_NAME.fullmatch(name) is None:
        return "name", f"{name!r:.100} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
    if kind not in METRIC_TYPES:
        return "type", f"type {kind!r:.50} is none of {', '.join(sorted(METRIC_TYPES))}"
    if HELP_TEXT.fullmatch(text) is None:
        return "help", "the help text has a newline or a backslash that is not \\\\ or \\n"
    names = [name + suffix for suffix in _SAMPLE_SUFFIXES.get(kind, ("",))]
    known = {} if known_series is None else known_series
    if len(known) > KNOWN_SERIES_MAX:
        known.clear()
    for line in samples:
        series, _, value = line.rpartition(" ")
        sample = known.get(series)
        if sample is None or not (value.isdigit() and value.isascii() or SAMPLE_VALUE.fullmatch(value)):  # counts: digits
            match = SAMPLE_LINE.fullmatch(line)
            if match is None:
                return "sample", f"{line!r:.200} is not a sample line (name, optional {{labels}}, a number, optional timestamp)"
            sample = match["name"]
            if match["timestamp"] is None and match["series"] == series:  # exactly "<series> <value>"
                known[series] = sample
        if sample not in names:
            allowed = " or ".join(repr(sample) for sample in names)
            return "sample", f"the sample {line!r:.200} is not of the family: its name must be {allowed}"
    return None
