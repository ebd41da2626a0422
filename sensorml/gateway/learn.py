"""``sensorml learn``: record the features of a healthy run for training.

It reads the gateway's own sources and computes features with the gateway's own
extractor, so the model is trained on exactly what it will see. The output ``.npz``
holds ``X`` (float32 rows × features), ``names``, ``t`` (seconds) and ``feature_spec``
(JSON), which ``sensorml train fit --features`` reads.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path

import numpy as np

from firmware_bridge.sources import open_source
from sensorml.config import GatewayConfig
from sensorml.edge.features import FeatureExtractor
from sensorml.edge.windowing import SlowTracker, Windower
from sensorml.errors import SensormlError


def learn(cfg: GatewayConfig, out: Path, *, duration_s: float, progress: bool = True,
          clock=time.monotonic) -> int:
    """Record ``duration_s`` of features from the configured sources into ``out``."""
    spec = cfg.feature_spec()
    q: queue.Queue = queue.Queue(maxsize=4096)
    from sensorml.gateway.process import Gateway

    opts = Gateway._source_options
    sources = [open_source(cfg.source.url, lambda b: q.put((0, b)), **opts(cfg.source))]
    for s in cfg.slow_sources:
        sources.append(open_source(s.url, lambda b: q.put((1, b)), **opts(s)))
    windower, extract = Windower(spec), FeatureExtractor(spec)
    slow = SlowTracker(spec) if spec.slow_channels else None
    rows, times = [], []
    for s in sources:
        s.start()
    t_start = clock()
    deadline = t_start + duration_s
    last_print = 0.0
    try:
        while (now := clock()) < deadline:
            try:
                kind, block = q.get(timeout=min(0.5, max(0.01, deadline - now)))
            except queue.Empty:
                continue
            if kind == 1:
                if slow is not None:
                    slow.push(block)
                continue
            for w in windower.push(block):
                if slow is not None and not slow.ready():
                    continue
                rows.append(extract(w.data, slow.window() if slow else None))
                times.append(w.t_end)
            if progress and now - last_print >= 1.0:
                last_print = now
                print(f"\rlearning: {now - t_start:5.1f}/{duration_s:.0f} s, {len(rows)} windows",
                      end="", file=sys.stderr, flush=True)
    finally:
        for s in sources:
            s.stop()
    if progress:
        print(file=sys.stderr)
    if not rows:
        raise SensormlError(
            f"learn: no complete window in {duration_s:.0f} s from {cfg.source.url} "
            f"(window {spec.window} samples at {spec.sample_rate} Hz): is the device sending?")
    X = np.vstack(rows).astype(np.float32)
    good = np.isfinite(X).all(axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, X=X[good], t=np.asarray(times)[good], names=np.array(spec.names()),
             feature_spec=np.array(json.dumps(spec.to_dict())), device_id=np.array(cfg.device_id))
    return int(good.sum())
