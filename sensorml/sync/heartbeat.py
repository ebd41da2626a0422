"""What the sync job's heartbeat (``status/<device>.json``) says about the gateway.

Whether the gateway is alive (:func:`gateway_state`: its process exists, its ``/status``
answers within a short timeout, its fast path advanced recently), the model version
running (the gateway's ``/status`` if it answers, else the newest model version the
buffer recorded), backlog per table, the anomaly rate and feature drift of
the recent windows against the bundle's training fingerprint. Reads are short and
bounded by row id (the newest ``max_rows`` rows), so they cost the gateway nothing.

Drift per feature: ``z`` = (recent mean − training mean) / training std, and ``out`` =
share of recent values outside the training [p01, p99] (about 0.02 when nothing moved).

>>> fp = {"a": {"mean": 0.0, "std": 1.0, "p01": -2.3, "p99": 2.3},
...       "b": {"mean": 5.0, "std": 0.5, "p01": 4.0, "p99": 6.0}}
>>> import numpy as np
>>> x = np.column_stack([np.zeros(100), np.full(100, 7.0)]).astype("float32")
>>> d = drift(x, fp)
>>> d["top"][0]["feature"], d["top"][0]["z"], d["top"][0]["out"]
('b', 4.0, 1.0)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sensorml.buffer.queries import BufferQueries

__all__ = ["anomaly_rate", "drift", "gateway_state", "heartbeat_extra", "model_running",
           "read_fingerprint"]

#: a fast path that has not turned for this long is stalled (it turns every 50 ms)
STALLED_AFTER_S = 5.0


def read_fingerprint(bundle: Path | None) -> tuple[str | None, dict]:
    """``(version, fingerprint)`` from the bundle's manifest (a folder or ``.tar.gz``).

    Only statistics are read here; the gateway verifies the bundle it runs.
    """
    if bundle is None:
        return None, {}
    p = Path(bundle)
    try:
        if p.is_dir():
            m = json.loads((p / "manifest.json").read_text())
        else:
            from sensorml.bundles.files import read_archive

            m = json.loads(read_archive(p)["manifest.json"])
    except (OSError, KeyError, ValueError, Exception):  # noqa: BLE001 - status, not a gate
        return None, {}
    return str(m.get("version")), dict(m.get("fingerprint") or {})


def anomaly_rate(buf: BufferQueries, since: float) -> dict:
    """Share of recent windows at warn or worse and at alarm or worse."""
    n, w, a = buf.anomaly_counts(since)
    return {"windows": n, "warn_or_worse": round(w / n, 6) if n else None,
            "alarm_or_worse": round(a / n, 6) if n else None}


def drift(x: np.ndarray, fingerprint: dict, top: int = 5) -> dict:
    """Per-feature z-shift and out-of-[p01, p99] share of *x* against *fingerprint*
    (feature name -> stats, in feature order); summary plus the *top* drifted."""
    names = list(fingerprint)
    if x.size == 0 or not names:
        return {"windows": int(len(x)), "features": len(names)}
    k = min(x.shape[1], len(names))
    x = x[:, :k].astype(np.float64)
    st = [fingerprint[n] for n in names[:k]]
    mean = np.array([s.get("mean", 0.0) for s in st])
    std = np.array([s.get("std", 1.0) or 1.0 for s in st])
    lo = np.array([s.get("p01", s.get("min", -np.inf)) for s in st])
    hi = np.array([s.get("p99", s.get("max", np.inf)) for s in st])
    with np.errstate(invalid="ignore"):
        z = (np.nanmean(x, 0) - mean) / np.where(std > 0, std, 1.0)
        out = np.mean((x < lo) | (x > hi), 0)
    order = np.argsort(-np.abs(np.nan_to_num(z)))[:top]
    return {"windows": int(len(x)), "features": k,
            "mean_abs_z": round(float(np.nanmean(np.abs(z))), 4),
            "max_abs_z": round(float(np.nanmax(np.abs(z))), 4),
            "mean_out": round(float(out.mean()), 4),
            "top": [{"feature": names[i], "z": round(float(z[i]), 4),
                     "out": round(float(out[i]), 4)} for i in order]}


def _process_state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP, a debugger), ``zombie`` or ``gone``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # another user's process: it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            code = f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return "running"
    return {"T": "stopped", "t": "stopped", "Z": "zombie", "X": "gone"}.get(code, "running")


def gateway_state(state_dir: Path | None, timeout: float = 2.0) -> tuple[dict, dict | None]:
    """``({"state": ...}, status)``: is the gateway there and answering?

    ``state`` is ``not running`` (no ``gateway.json``, or its pid is gone), ``not
    answering`` (the process exists, ``/status`` did not answer within ``timeout``: hung,
    stopped, or its control port is down), ``stalled`` (it answers, but its fast path has
    not advanced for :data:`STALLED_AFTER_S`) or ``answering``; ``status`` is its
    ``/status`` when it answered."""
    if state_dir is None:
        return {"state": "unknown"}, None
    try:
        info = json.loads((Path(state_dir) / "gateway.json").read_text())
        pid = int(info["pid"])
    except FileNotFoundError:
        return {"state": "not running"}, None
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"state": "unknown", "error": f"gateway.json: {e}"}, None
    process = _process_state(pid)
    if process in ("gone", "zombie"):
        return {"state": "not running", "pid": pid, "process": process}, None
    from sensorml.gateway.client import call

    t0 = time.monotonic()
    try:
        st = call(Path(state_dir), "/status", timeout=timeout)
    except Exception as e:  # noqa: BLE001 - any failure to answer is the finding
        # read again: a signal sent just before the call may not have been delivered
        # when the state was first read, and the call waited ``timeout`` since
        process = _process_state(pid)
        if process in ("gone", "zombie"):
            return {"state": "not running", "pid": pid, "process": process}, None
        return {"state": "not answering", "pid": pid, "process": process,
                "timeout_s": timeout, "error": str(e)}, None
    idle = (st.get("fast_path") or {}).get("idle_s")
    return {"state": "stalled" if idle is not None and idle > STALLED_AFTER_S else "answering",
            "pid": pid, "process": process,
            "answer_ms": round((time.monotonic() - t0) * 1e3, 1), "fast_path_idle_s": idle,
            "tripped": st.get("tripped"), "life_signs": st.get("life_signs")}, st


def model_running(state_dir: Path | None, buf: BufferQueries, status: dict | None = None) -> dict:
    """The model the gateway runs: from its ``/status`` (``status``, or asked here if it
    runs), else the buffer."""
    if status is not None:
        m = status.get("model") or {}
        return {"source": "gateway", "name": m.get("name"), "version": m.get("version"),
                "tripped": status.get("tripped"), "windows": status.get("windows"),
                "model_error": status.get("model_error")}
    if state_dir is not None and (Path(state_dir) / "gateway.json").exists():
        try:
            from sensorml.gateway.client import call

            st = call(Path(state_dir), "/status", timeout=2.0)
            m = st.get("model") or {}
            return {"source": "gateway", "name": m.get("name"), "version": m.get("version"),
                    "tripped": st.get("tripped"), "windows": st.get("windows"),
                    "model_error": st.get("model_error")}
        except Exception:  # noqa: BLE001 - a stale gateway.json: fall back to the buffer
            pass
    seen = buf.last_model_seen()
    return {"source": "buffer", "version": seen.version if seen else None,
            "seen_at": seen.t if seen else None}


def heartbeat_extra(buf: BufferQueries, *, now: float, window_s: float,
                    state_dir: Path | None, bundle: Path | None) -> dict[str, Any]:
    """The gateway-side part of the heartbeat (model, anomaly rate, drift)."""
    since = now - window_s
    version, fp = read_fingerprint(bundle)
    d = drift(buf.recent_features(since), fp) if fp else {"error": "no bundle fingerprint"}
    d["reference"] = version
    gateway, status = gateway_state(state_dir)
    return {"gateway": gateway,
            "model": model_running(None, buf, status),
            "anomaly_rate": {"window_s": window_s, **anomaly_rate(buf, since)},
            "drift": d}
