"""The Prometheus registry: text format (parsed back), labels, threads. (``GET /metrics`` on the
gateway's control port: ``test_gateway_e2e.py``.)"""

from __future__ import annotations

import math
import re
import threading

import pytest

from sensorml.gateway.metrics import Registry

SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|\Z)')


def parse(text: str) -> tuple[dict, dict, dict]:
    """A small parser of the text format: (help, type, samples) keyed by name
    (samples by ``(name, frozenset(labels))``). Fails on any malformed line."""
    helps, types, samples = {}, {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, h = line[7:].partition(" ")
            helps[name] = h.replace(r"\n", "\n").replace("\\\\", "\\")
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            labels = {}
            if m.group(2):
                pos = 0
                for lm in LABEL.finditer(m.group(2)):
                    assert lm.start() == pos, f"bad labels in {line!r}"
                    pos = lm.end()
                    labels[lm.group(1)] = (lm.group(2).replace(r"\n", "\n")
                                           .replace(r"\"", '"').replace("\\\\", "\\"))
                assert pos == len(m.group(2)), f"bad labels in {line!r}"
            key = (m.group(1), frozenset(labels.items()))
            assert key not in samples, f"duplicate series {line!r}"
            samples[key] = float(m.group(3))
    return helps, types, samples


def test_render_parses_back_with_values_labels_and_cumulative_buckets():
    reg = Registry()
    wins = reg.counter("sensorml_windows_total", "Windows scored, by verdict.", ("verdict",))
    warn = wins.labels(verdict="warn")
    for _ in range(3):
        warn.inc()
    wins.labels("normal").inc(10)
    q = reg.gauge("sensorml_queue_depth", "Items waiting.")
    q.set(7)
    q.dec(2)
    depth = [41]
    reg.gauge("sensorml_recorder_queued", "From a function.").set_function(lambda: depth[0])
    lat = reg.histogram("sensorml_trip_latency_seconds", "Sample to trip.",
                        buckets=(0.001, 0.005, 0.01))
    for v in (0.0004, 0.001, 0.003, 0.02, 0.007):
        lat.observe(v)
    odd = reg.counter("sensorml_odd_total", 'Help with \\ and\nnewline.', ("where",))
    odd.labels(where='a "quoted"\\path\nline').inc()

    helps, types, s = parse(reg.render())
    assert types == {"sensorml_windows_total": "counter", "sensorml_queue_depth": "gauge",
                     "sensorml_recorder_queued": "gauge",
                     "sensorml_trip_latency_seconds": "histogram", "sensorml_odd_total": "counter"}
    assert helps["sensorml_odd_total"] == "Help with \\ and\nnewline."
    assert s[("sensorml_windows_total", frozenset({("verdict", "warn")}))] == 3
    assert s[("sensorml_windows_total", frozenset({("verdict", "normal")}))] == 10
    assert s[("sensorml_queue_depth", frozenset())] == 5
    assert s[("sensorml_recorder_queued", frozenset())] == 41
    depth[0] = 3
    assert parse(reg.render())[2][("sensorml_recorder_queued", frozenset())] == 3
    buckets = {lab: v for (n, labels), v in s.items() if n == "sensorml_trip_latency_seconds_bucket"
               for lab in [dict(labels)["le"]]}
    assert buckets == {"0.001": 2, "0.005": 3, "0.01": 4, "+Inf": 5}  # le is inclusive
    assert s[("sensorml_trip_latency_seconds_count", frozenset())] == 5
    assert math.isclose(s[("sensorml_trip_latency_seconds_sum", frozenset())], 0.0314)
    assert s[("sensorml_odd_total", frozenset({("where", 'a "quoted"\\path\nline')}))] == 1


def test_misuse_is_a_clear_error():
    reg = Registry()
    c = reg.counter("a_total", "x", ("verdict",))
    with pytest.raises(ValueError, match="use .labels"):
        c.inc()
    assert reg.render() == "# HELP a_total x\n# TYPE a_total counter\n"  # no series yet
    c.labels(verdict="ok")
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("a_total")
    with pytest.raises(ValueError, match="not a valid Prometheus name"):
        reg.gauge("bad-name")
    with pytest.raises(ValueError, match="labels must be"):
        c.labels(other="x")
    with pytest.raises(ValueError, match="cannot decrease"):
        c.labels(verdict="ok").inc(-1)
    with pytest.raises(ValueError, match="label name 'le'"):
        reg.histogram("h", "x", ("le",))


def test_threadsafe_counter_is_exact_under_contention():
    reg = Registry()
    c = reg.counter("c_total", "x", threadsafe=True)
    h = reg.histogram("h_seconds", "x", buckets=(1.0,), threadsafe=True)

    def work() -> None:
        for _ in range(20000):
            c.inc()
            h.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = parse(reg.render())[2]
    assert s[("c_total", frozenset())] == 80000
    assert s[("h_seconds_count", frozenset())] == 80000
