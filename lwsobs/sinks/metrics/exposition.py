"""Fast Prometheus text and OpenMetrics rendering of the LwsobsCollector.

prometheus_client builds a Sample tuple per bucket and formats each with escaping and sorting,
about 6 us a line; a scrape of 30 (source, role) series took 8 ms (text) and 15 ms
(OpenMetrics). This writes the same bytes (tests compare them with prometheus_client's own
output) straight from the integer counters and histograms, with label strings cached per
series. Other collectors are not its business: /metrics falls back to prometheus_client for
anything it does not render (a `name[]` filter, other registries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString as _untyped_go_string

from lwsobs.core.roles import Role
from lwsobs.sinks.metrics.collector import (
    COUNTERS,
    HISTOGRAMS,
    LwsobsCollector,
    _relabel,
    _series_order,
)
from lwsobs.sinks.metrics.histogram import Histogram


def go_float(value: float) -> str:
    """prometheus_client's number formatting (Go's float format), typed."""
    return str(_untyped_go_string(value))  # type: ignore[no-untyped-call]


_label_cache: dict[tuple[tuple[str, str], ...], str] = {}


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    """'k1="v1",k2="v2"' sorted by name, cached: series label sets come from closed sets."""
    text = _label_cache.get(pairs)
    if text is None:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs))
        if len(_label_cache) < 65536:
            _label_cache[pairs] = text
    return text


def _number(value: float) -> str:
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"  # what floatToGoString gives for these, without the detour
    return go_float(value)


def _help(name: str, doc: str, openmetrics: bool) -> str:
    """HELP escapes backslash and newline; OpenMetrics also escapes double quotes."""
    text = doc.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        text = text.replace('"', r"\"")
    return f"# HELP {name} {text}\n"


def render(collector: LwsobsCollector, openmetrics: bool) -> str:
    out: list[str] = []
    for family in collector._live():
        _generic(out, family, openmetrics)
    metrics = collector.metrics
    for name, doc, label_names, attr in COUNTERS:
        head = name if openmetrics else f"{name}_total"
        out.append(_help(head, doc, openmetrics))
        out.append(f"# TYPE {head} counter\n")
        for key, n in sorted(_relabel(getattr(metrics, attr)).items()):
            labels = _labels(tuple(zip(label_names, key, strict=True)))
            out.append(f"{name}_total{{{labels}}} {_number(n)}\n")
    for name, doc, attr in HISTOGRAMS:
        out.append(_help(name, doc, openmetrics))
        out.append(f"# TYPE {name} histogram\n")
        series: Mapping[tuple[str, Role], Histogram] = getattr(metrics, attr)
        for (source, role), hist in sorted(series.items(), key=_series_order):
            _histogram(out, collector, name, source, role.value, hist, openmetrics)
    for more in collector.extra:
        for family in more():
            _generic(out, family, openmetrics)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out)


def _histogram(
    out: list[str],
    collector: LwsobsCollector,
    name: str,
    source: str,
    role: str,
    hist: Histogram,
    openmetrics: bool,
) -> None:
    base = (("role", role), ("source", source))
    cumulative = hist.cumulative()
    for (le, count), ex in zip(cumulative, hist.exemplars, strict=True):
        line = f"{name}_bucket{{{_labels((('le', le), *base))}}} {_number(count)}"
        if openmetrics and ex is not None:
            exemplar = collector._exemplar(ex)
            if exemplar is not None:
                ex_labels = ",".join(
                    f'{k}="{_escape(v)}"' for k, v in sorted(exemplar.labels.items())
                )
                line += f" # {{{ex_labels}}} {go_float(exemplar.value)}"
                if exemplar.timestamp is not None:
                    line += f" {exemplar.timestamp}"
        out.append(line + "\n")
    labels = _labels(base)
    out.append(f"{name}_count{{{labels}}} {_number(cumulative[-1][1])}\n")
    out.append(f"{name}_sum{{{labels}}} {go_float(hist.sum)}\n")


def _generic(out: list[str], family: Metric, openmetrics: bool) -> None:
    """A small family (gauges, self-metric counters) as prometheus_client would write it."""
    name = family.name
    head = f"{name}_total" if family.type == "counter" and not openmetrics else name
    out.append(_help(head, family.documentation, openmetrics))
    out.append(f"# TYPE {head} {family.type}\n")
    for sample in family.samples:
        labels = _labels(tuple(sample.labels.items())) if sample.labels else ""
        body = f"{{{labels}}}" if labels else ""
        out.append(f"{sample.name}{body} {go_float(sample.value)}\n")


def render_families(families: Iterable[Metric], openmetrics: bool) -> str:
    """Render any small families the same way (used for other parts' self-metrics)."""
    out: list[str] = []
    for family in families:
        _generic(out, family, openmetrics)
    return "".join(out)
