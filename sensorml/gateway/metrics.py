"""A tiny Prometheus registry: counters, gauges, histograms and their text format (served
on ``/metrics`` by the gateway's control endpoint, :mod:`sensorml.gateway.control`).

No dependency; made for the fast path: an increment is a plain attribute update
(~0.1 µs; a histogram observation ~0.5 µs). Cache the labelled child once
(``warn = verdicts.labels(verdict="warn")``) and call ``warn.inc()`` per window.

Thread-safety: reads (:meth:`Registry.render`, from the HTTP thread) are always safe.
An update is ``self.value += n``, which CPython may interrupt between the read and the
write: two threads updating *the same* child can, rarely, lose an increment. Each child
written by one thread (the fast path's counters) is exact. For a child updated from
several threads, create the metric with ``threadsafe=True`` (a lock per update, ~0.2 µs).

>>> reg = Registry()
>>> wins = reg.counter("sensorml_windows_total", "Windows scored.", ("verdict",))
>>> wins.labels(verdict="warn").inc()
>>> lat = reg.histogram("sensorml_trip_seconds", "Sample to trip.", buckets=(0.001, 0.01))
>>> lat.observe(0.004)
>>> print(reg.render(), end="")
# HELP sensorml_windows_total Windows scored.
# TYPE sensorml_windows_total counter
sensorml_windows_total{verdict="warn"} 1
# HELP sensorml_trip_seconds Sample to trip.
# TYPE sensorml_trip_seconds histogram
sensorml_trip_seconds_bucket{le="0.001"} 0
sensorml_trip_seconds_bucket{le="0.01"} 1
sensorml_trip_seconds_bucket{le="+Inf"} 1
sensorml_trip_seconds_sum 0.004
sensorml_trip_seconds_count 1
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence

__all__ = ["Counter", "Gauge", "Histogram", "Registry", "DEFAULT_BUCKETS"]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_UPDATES = ("inc", "dec", "set", "observe", "set_function")


def format_value(v: float) -> str:
    """Prometheus number text.

    >>> format_value(3.0), format_value(0.25), format_value(float("inf")), format_value(-math.inf)
    ('3', '0.25', '+Inf', '-Inf')
    """
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _escape(s: str) -> str:
    return s.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels_text(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str = "", labelnames: Sequence[str] = (), *,
                 threadsafe: bool = False) -> None:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not a valid Prometheus name")
        for ln in labelnames:
            if not _LABEL.match(ln) or ln.startswith("__") or ln == "le":
                raise ValueError(f"metric {name}: label name {ln!r} is not allowed")
        self.name, self.help = name, help
        self.labelnames = tuple(labelnames)
        self.labelvalues: tuple[str, ...] = ()
        self.threadsafe = threadsafe
        self._lock = threading.Lock() if threadsafe else None
        self._children: dict[tuple[str, ...], _Metric] = {}
        self._children_lock = threading.Lock()
        self._reset()
        if self.labelnames:  # the parent only hands out children
            for op in _UPDATES:
                setattr(self, op, self._needs_labels)

    def _needs_labels(self, *args: object) -> None:
        raise ValueError(f"metric {self.name} has labels {self.labelnames}: "
                         "use .labels(...) first")

    def _reset(self) -> None:
        raise NotImplementedError

    def labels(self, *values: str, **kw: str) -> _Metric:
        """The child for these label values (created on first use; cache it)."""
        if kw:
            if values or set(kw) != set(self.labelnames):
                raise ValueError(f"metric {self.name}: labels must be {self.labelnames}, "
                                 f"got {tuple(kw) or values}")
            values = tuple(kw[n] for n in self.labelnames)
        if len(values) != len(self.labelnames) or not self.labelnames:
            raise ValueError(f"metric {self.name}: expects labels {self.labelnames}, "
                             f"got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._children_lock:
                child = self._children.get(key)
                if child is None:
                    child = type(self).__new__(type(self))
                    child.__dict__.update(self.__dict__)
                    for op in _UPDATES:
                        child.__dict__.pop(op, None)
                    child.labelvalues = key
                    child._children = {}
                    child._lock = threading.Lock() if self.threadsafe else None
                    child._reset()
                    self._children[key] = child
        return child

    def _series(self) -> Iterator[_Metric]:
        if self.labelnames:
            yield from list(self._children.values())
        else:
            yield self

    def samples(self) -> Iterator[tuple[str, tuple[tuple[str, str], ...], float]]:
        """``(name, label pairs, value)`` for every series."""
        for s in self._series():
            pairs = tuple(zip(s.labelnames, s.labelvalues))
            yield from s._own_samples(pairs)

    def _own_samples(self, pairs):  # pragma: no cover - overridden
        raise NotImplementedError

    def render(self) -> str:
        help_text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {self.name} {help_text}",
                 f"# TYPE {self.name} {self.kind}"]
        lines += [f"{n}{_labels_text(p)} {format_value(v)}" for n, p, v in self.samples()]
        return "\n".join(lines) + "\n"


class Counter(_Metric):
    """A value that only goes up (name it ``..._total``)."""

    kind = "counter"

    def _reset(self) -> None:
        self.value = 0
        self._fn: Callable[[], float] | None = None

    def inc(self, n: float = 1) -> None:
        if n < 0:
            raise ValueError(f"counter {self.name}: cannot decrease (inc({n}))")
        if self._lock is None:
            self.value += n
        else:
            with self._lock:
                self.value += n

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the count from ``fn()`` at each render (a count kept by another object)."""
        self._fn = fn

    def _own_samples(self, pairs):
        yield self.name, pairs, _read(self._fn, self.value)


class Gauge(_Metric):
    """A value that goes up and down, or is read from a function at render time."""

    kind = "gauge"

    def _reset(self) -> None:
        self.value = 0.0
        self._fn: Callable[[], float] | None = None

    def set(self, v: float) -> None:
        self.value = v

    def inc(self, n: float = 1) -> None:
        if self._lock is None:
            self.value += n
        else:
            with self._lock:
                self.value += n

    def dec(self, n: float = 1) -> None:
        self.inc(-n)

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the value from ``fn()`` at each render (e.g. a queue's depth)."""
        self._fn = fn

    def _own_samples(self, pairs):
        yield self.name, pairs, _read(self._fn, self.value)


def _read(fn: Callable[[], float] | None, value: float) -> float:
    if fn is None:
        return value
    try:
        return float(fn())
    except Exception:  # noqa: BLE001 - a broken probe must not break /metrics
        return math.nan


class Histogram(_Metric):
    """Counts of observations in fixed buckets (upper bounds), plus sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str = "", labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float] = DEFAULT_BUCKETS, threadsafe: bool = False) -> None:
        b = sorted(float(x) for x in buckets if not math.isinf(x))
        if not b or len(set(b)) != len(b):
            raise ValueError(f"histogram {name}: buckets must be distinct numbers, got {buckets}")
        self.bounds = tuple(b)
        super().__init__(name, help, labelnames, threadsafe=threadsafe)

    def _reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.bounds, v)  # le: v <= bound
        if self._lock is None:
            self.counts[i] += 1
            self.sum += v
            self.count += 1
        else:
            with self._lock:
                self.counts[i] += 1
                self.sum += v
                self.count += 1

    def _own_samples(self, pairs):
        counts, total, acc = list(self.counts), self.sum, 0
        for bound, c in zip((*self.bounds, math.inf), counts):
            acc += c
            yield f"{self.name}_bucket", (*pairs, ("le", format_value(bound))), acc
        yield f"{self.name}_sum", pairs, total
        yield f"{self.name}_count", pairs, acc


class Registry:
    """Named metrics rendered together, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def register(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str = "", labelnames: Sequence[str] = (),
                **kw) -> Counter:
        return self.register(Counter(name, help, labelnames, **kw))  # type: ignore[return-value]

    def gauge(self, name: str, help: str = "", labelnames: Sequence[str] = (), **kw) -> Gauge:
        return self.register(Gauge(name, help, labelnames, **kw))  # type: ignore[return-value]

    def histogram(self, name: str, help: str = "", labelnames: Sequence[str] = (),
                  **kw) -> Histogram:
        return self.register(Histogram(name, help, labelnames, **kw))  # type: ignore[return-value]

    def get(self, name: str) -> _Metric:
        return self._metrics[name]

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(m.render() for m in metrics)
