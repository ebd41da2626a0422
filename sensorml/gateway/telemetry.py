"""The gateway's own figures, in Prometheus text format on ``/metrics``.

Counters the fast path touches are cached children (one attribute update per window).
Gauges that mirror other objects (queue depth, the model running, source counters) are
read when ``/metrics`` is scraped, never on the fast path. The recorder registers its own
families (``sensorml_recorder_*``: queue depth, rows written, dropped and refused by the
buffer per lane, write errors, evictions, buffer size; see
:meth:`sensorml.buffer.recorder.Recorder.register_metrics`), also read at scrape time.
"""

from __future__ import annotations

from sensorml.edge.decider import Verdict
from sensorml.gateway.metrics import Registry

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class GatewayMetrics:
    """The gateway's registry; ``recorder``'s families are registered in it too."""

    def __init__(self, recorder) -> None:
        r = self.registry = Registry()
        self.windows = r.counter("sensorml_windows_total", "Windows processed.")
        self.windows_unscored = r.counter("sensorml_windows_unscored_total",
                                          "Windows not scored while slow channels warm up.")
        verdicts = r.counter("sensorml_verdicts_total", "Scored windows by verdict.", ("verdict",))
        self.verdicts = {v: verdicts.labels(verdict=v.label) for v in Verdict}
        self.last_score = r.gauge("sensorml_last_score", "Anomaly score of the last window.")
        self.trips = r.counter("sensorml_trips_total", "Trips latched.")
        self.trip_failures = r.counter("sensorml_trip_failures_total",
                                       "Trips whose actuators failed after retries.")
        self.trip_reasserts = r.counter("sensorml_trip_reasserts_total",
                                        "Stops sent again while latched: a device lost its "
                                        "stop (read back, reconnected) or a trip raced a reset.")
        self.reset_refusals = r.counter("sensorml_reset_refusals_total",
                                        "Resets refused: cause still present or rate limit.")
        self.trip_latency = r.histogram("sensorml_trip_latency_seconds",
                                        "Sample-to-trip latency: bytes completing the window "
                                        "to trip actions done.", buckets=LATENCY_BUCKETS)
        self.window_latency = r.histogram("sensorml_window_latency_seconds",
                                          "Bytes completing a window to its verdict.",
                                          buckets=LATENCY_BUCKETS)
        self.sensor_faults = r.counter("sensorml_sensor_faults_total",
                                       "Windows not scored: non-finite features (sensor fault).")
        self.input_faults = r.counter(
            "sensorml_input_faults_total", "Dead inputs (non-finite, frozen, stale) by fault "
            "and phase: onset, act (persisted: tripped or alarmed per policy), cleared.",
            ("fault", "phase"))
        self.model_failures = r.counter("sensorml_model_failures_total", "Failed scorings.")
        self.model_refusals = r.counter("sensorml_model_refusals_total",
                                        "Bundles refused at load or reload.")
        self.failsafe = r.counter("sensorml_failsafe_total", "Watchdog fail-safe actions.")
        self.queue_drops = r.counter("sensorml_queue_drops_total",
                                     "Blocks dropped because the fast path fell behind.")
        self.source_events = r.counter("sensorml_source_events_total",
                                       "Source outages, recoveries and errors.")
        self.heartbeats = r.counter("sensorml_heartbeats_total",
                                    "Heartbeats sent to the controller ([heartbeat]).")
        self.heartbeat_failures = r.counter("sensorml_heartbeat_failures_total",
                                            "Heartbeats that failed (device down or refusing).")
        self._model = r.gauge("sensorml_model_info", "Model running (1).",
                              ("name", "version"))
        self._model_shown: tuple[str, str] | None = None
        self._dyn = {
            "queue_depth": r.gauge("sensorml_queue_depth", "Blocks waiting for the fast path."),
            "tripped": r.gauge("sensorml_tripped", "1 while the trip is latched."),
            "src": r.gauge("sensorml_source_counter", "Source counters.", ("source", "counter")),
        }
        recorder.register_metrics(r)

    def _refresh(self, gw) -> None:
        d = self._dyn
        d["queue_depth"].set(gw.q.qsize())
        d["tripped"].set(1 if gw.latch.tripped else 0)
        live = gw.slot.live
        shown = (live.name, live.version) if live else None
        if shown != self._model_shown:
            self._model._children.clear()
            if shown:
                self._model.labels(name=shown[0], version=shown[1]).set(1)
            self._model_shown = shown
        for s in gw.sources:
            for k, v in s.stats().items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    d["src"].labels(source=s.url, counter=k).set(v)

    def render(self, gw=None) -> str:
        if gw is not None:
            self._refresh(gw)
        return self.registry.render()

    def summary(self) -> dict:
        return {
            "windows": self.windows.value,
            "verdicts": {v.label: c.value for v, c in self.verdicts.items()},
            "trips": self.trips.value,
            "trip_failures": self.trip_failures.value,
            "model_failures": self.model_failures.value,
            "queue_drops": self.queue_drops.value,
        }
