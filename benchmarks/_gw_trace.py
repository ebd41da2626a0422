"""Where the gateway's sample-to-trip time goes: the real gateway process with timing
wrappers (``perf_counter``, the same clock in every process) around its stages, run by
``bench_gateway`` on its device pty. Diagnosis only: the wrappers add a few µs.

    python -m benchmarks._gw_trace CONFIG

Prints one JSON line per trip on stdout with the stamps of the block that completed the
tripping window: ``read`` (the serial read returned), ``queued`` (decoded and put on the
queue), ``dequeued`` (fast path took it), ``features`` / ``scored`` (ends of those
stages), ``trip`` (``FastPath.trip`` entered), ``write`` (``STOP`` handed to the port).
"""

from __future__ import annotations

import json
import sys
import time

import serial

import firmware_bridge.sources.serial as ss
import sensorml.edge.fastpath as fp
import sensorml.edge.features as feats
import sensorml.edge.scorer as scorer

pc = time.perf_counter
_handled: dict[float, float] = {}  # t_recv -> end of the reader's _handle
_dequeued: dict[float, float] = {}  # t_recv -> fast path took the block
last = {"features": 0.0, "scored": 0.0, "write": 0.0}


def _wrap() -> None:
    handle = ss.SerialSource._handle

    def _handle(self, data, t_recv):
        handle(self, data, t_recv)
        _handled[t_recv] = pc()
        if len(_handled) > 256:
            _handled.pop(next(iter(_handled)))

    ss.SerialSource._handle = _handle

    on_fast = fp.FastPath.on_fast_block

    def on_fast_block(self, block):
        _dequeued[block.t_recv] = pc()
        if len(_dequeued) > 256:
            _dequeued.pop(next(iter(_dequeued)))
        on_fast(self, block)

    fp.FastPath.on_fast_block = on_fast_block

    call = feats.FeatureExtractor.__call__

    def extract(self, window, slow=None):
        x = call(self, window, slow)
        last["features"] = pc()
        return x

    feats.FeatureExtractor.__call__ = extract

    score = scorer.Scorer.score

    def score_(self, x):
        s = score(self, x)
        last["scored"] = pc()
        return s

    scorer.Scorer.score = score_

    write = serial.Serial.write

    def write_(self, data):
        if bytes(data[:4]) == b"STOP":
            last["write"] = pc()
        return write(self, data)

    serial.Serial.write = write_

    trip = fp.FastPath.trip

    def trip_(self, cause, detail, *, t_recv, features=None):
        t = pc()
        feat, sc = last["features"], last["scored"]
        fired = trip(self, cause, detail, t_recv=t_recv, features=features)
        if fired:
            print(json.dumps({"read": t_recv, "queued": _handled.get(t_recv),
                              "dequeued": _dequeued.get(t_recv), "features": feat,
                              "scored": sc, "trip": t, "write": last["write"],
                              "cause": cause}), flush=True)
        return fired

    fp.FastPath.trip = trip_


if __name__ == "__main__":
    _wrap()
    from sensorml.cli import main

    sys.exit(main(["gateway", "--config", sys.argv[1]]))
