"""The gateway's configuration: one TOML file, checked as a whole before anything starts.

``load_config(path)`` returns a frozen :class:`GatewayConfig` or raises
:class:`~sensorml.errors.ConfigError` whose message starts with the key path:
``decision.k: 7 is larger than decision.n (5)``. Relative paths are resolved against the
config file's folder. ``sensorml check-config gateway.toml`` prints the resolved result.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorml.confcheck import Table
from sensorml.errors import ConfigError
from sensorml.ids import check_device_id

FAILSAFE = ("trip", "alarm")
SCHEMES = ("serial", "modbus-tcp", "modbus-rtu", "sim")


@dataclass(frozen=True)
class SourceConfig:
    url: str
    channels: tuple[str, ...] = ()
    rate: float | None = None
    options: dict = field(default_factory=dict)
    #: ``[[slow_sources]] stale_after``: channel -> seconds it must change within
    #: (``"*"``: every channel of the source); empty: not checked (sensorml.edge.inputs)
    stale_after: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    bundle: Path | None
    trusted_keys: tuple[str, ...] = ()
    allow_unsigned: bool = False
    #: how often the reload thread looks at the bundle folder for a new version
    watch_s: float = 1.0


@dataclass(frozen=True)
class DecisionConfig:
    k: int = 3
    n: int = 5
    hysteresis: float = 0.1
    warn: float | None = None
    alarm: float | None = None
    trip: float | None = None
    #: after the gateway starts and after every reset the machine runs up: the model may
    #: warn and alarm but not trip for this long (hard limits and the watchdog still trip)
    startup_inhibit_s: float = 5.0


@dataclass(frozen=True)
class LimitConfig:
    channel: str
    above: float | None = None
    below: float | None = None


@dataclass(frozen=True)
class WatchdogConfig:
    timeout_s: float = 0.5
    max_gap: int = 8
    on_silence: str = "trip"
    on_gap: str = "alarm"
    on_model_failure: str = "alarm"
    model_failures: int = 3
    #: non-finite or frozen fast samples, stale slow points (sensorml.edge.inputs):
    #: acted on when the condition held this long
    on_sensor_fault: str = "trip"
    sensor_fault_for_s: float = 2.0
    #: a fast channel repeating the exact same value this long is dead (0: not checked)
    frozen_after_s: float = 0.5


@dataclass(frozen=True)
class BufferConfig:
    path: Path
    max_mb: float = 256.0
    raw_sample_every: int = 600
    queue_size: int = 20000


@dataclass(frozen=True)
class SyncConfig:
    store: str = ""
    every_s: float = 60.0
    #: bandwidth caps of the upload (0 = none): bytes per run, bytes per second
    max_bytes_per_run: int = 0
    max_bytes_per_s: float = 0.0
    #: false: raw samples never leave the site (features, scores, events, labels only)
    upload_raw: bool = True
    #: rows per uploaded batch (raw windows: a tenth of it)
    batch_rows: int = 5000
    #: S3-compatible stores: endpoint URL (else $SENSORML_S3_ENDPOINT), region, and a
    #: 0600 file with access_key/secret_key (else $SENSORML_S3_ACCESS_KEY/_SECRET_KEY)
    endpoint: str = ""
    region: str = ""
    credentials: Path | None = None
    #: the heartbeat's anomaly rate and drift cover this much recent data
    status_window_s: float = 3600.0


@dataclass(frozen=True)
class DeployConfig:
    """``[deploy]``: how new models reach this gateway (see sensorml.bundles.fetch/shadow)."""

    #: the fleet file ``desired/<fleet>.json`` this gateway follows (its own
    #: ``desired/<device_id>.json`` overrides it)
    fleet: str = "default"
    #: windows a candidate scores in shadow before it may go live
    shadow_windows: int = 600
    #: a candidate is rolled back when its alarm rate exceeds
    #: max(rate_factor x the live model's rate, max_alarm_rate)
    max_alarm_rate: float = 0.01
    rate_factor: float = 2.0
    #: honour a desired file's allow_downgrade (false: only `sensorml rollback` goes back)
    allow_downgrade: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9108
    #: the control port takes POST /reset without authentication: it listens on
    #: loopback only, unless this is set (then put it behind a firewall or a proxy)
    allow_remote: bool = False


HEARTBEAT_KINDS = ("modbus-coil", "modbus-register", "serial")


@dataclass(frozen=True)
class HeartbeatConfig:
    """``[heartbeat]``: a life sign the controller watches (sensorml.gateway.lifesigns).

    ``modbus-coil`` toggles coil ``address``, ``modbus-register`` increments holding
    register ``address`` (mod 65536) of ``device_id`` at ``url``, on a connection of its
    own; ``serial`` writes ``HB <n>`` on the serial source's line (PROTOCOL.md §4). A beat
    is sent every ``period_s`` only if the fast path advanced since the last one."""

    kind: str
    url: str = ""
    address: int = 0
    device_id: int = 1
    period_s: float = 1.0
    #: one write's time limit (a late device costs the heartbeat thread, never the trip)
    timeout_s: float = 0.25


@dataclass(frozen=True)
class LatchConfig:
    """``[latch]``: how the stop is kept while tripped."""

    #: the durable latch state (fsynced at each trip and reset)
    path: Path
    #: read every trip actuator back this often while latched, re-sending a lost stop
    verify_every_s: float = 0.5


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    device_id: str
    state_dir: Path
    source: SourceConfig
    slow_sources: tuple[SourceConfig, ...]
    features: dict
    model: ModelConfig
    decision: DecisionConfig
    limits: tuple[LimitConfig, ...]
    watchdog: WatchdogConfig
    trip: tuple[Any, ...]  # firmware_bridge.actuators.ActuatorSpec
    reset_input: str | None
    buffer: BufferConfig
    sync: SyncConfig
    metrics: MetricsConfig
    deploy: DeployConfig = DeployConfig()
    latch: LatchConfig | None = None
    #: at most one reset per this many seconds (``reset.min_interval``)
    reset_min_interval_s: float = 10.0
    #: None: no heartbeat (the ``[heartbeat]`` table is absent)
    heartbeat: HeartbeatConfig | None = None

    def feature_spec(self):
        """The :class:`~sensorml.edge.features.FeatureSpec` the windows of this gateway produce."""
        from sensorml.edge.features import FeatureSpec

        f = dict(self.features)
        f.setdefault("channels", list(self.source.channels))
        f.setdefault("sample_rate", self.source.rate)
        f.setdefault("window", 1024)
        if isinstance(f["window"], int) and not isinstance(f["window"], bool):
            f.setdefault("hop", max(1, f["window"] // 2))
        return FeatureSpec.from_dict(f)  # its errors name features.<key>

    def to_dict(self) -> dict:
        def conv(v: Any) -> Any:
            if dataclasses.is_dataclass(v):
                return {k: conv(x) for k, x in dataclasses.asdict(v).items()}
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [conv(x) for x in v]
            if isinstance(v, Path):
                return str(v)
            return v

        return conv(self)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and check ``gateway.toml``; raise ConfigError naming the first bad key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return parse_config(data, p.resolve().parent, p)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def _source(t: Table) -> SourceConfig:
    from firmware_bridge.parsing import split_url

    url = t.str("url")
    try:
        scheme = split_url(url)[0]
    except ValueError as e:
        raise ConfigError(f"{t.key('url')}: {e}") from None
    if scheme not in SCHEMES:
        raise ConfigError(f"{t.key('url')}: unknown scheme {scheme!r} in {url!r} "
                          f"(expected {', '.join(SCHEMES)})")
    channels = t.str_list("channels", ())
    rate = t.float("rate", None, lo=1e-3)
    options = {}
    if t.has("map"):
        options["map"] = str(t.path_("map"))
    if t.has("baud"):
        options["baud"] = t.int("baud", lo=1)
    if t.has("format"):
        options["format"] = t.str("format", choices=("csv", "frames"))
    for k in ("poll_rate", "timeout"):
        if t.has(k):
            options[k] = t.raw(k)
    stale = _stale_after(t, options.get("map")) if t.has("stale_after") else {}
    t.done()
    return SourceConfig(url, channels, rate, options, stale)


def _stale_after(t: Table, map_path: str | None) -> dict:
    """``stale_after = "10s"`` (every channel) or ``{ temperature_c = "10s", ... }``."""
    if not t.path.startswith("slow_sources"):
        raise ConfigError(f"{t.key('stale_after')}: only for [[slow_sources]] (fast channels "
                          "are checked by watchdog.frozen_after)")
    v = t.raw("stale_after")
    if not isinstance(v, dict):
        return {"*": t.duration("stale_after", lo=0.001)}
    st = Table(v, t.key("stale_after"), t.base_dir)
    out = {ch: st.duration(ch, lo=0.001) for ch in v}
    names = None
    if map_path is not None:
        from firmware_bridge.errors import BridgeError
        from firmware_bridge.modbus.regmap import load_map

        try:
            names = [p.name for p in load_map(map_path).points]
        except BridgeError:
            names = None  # the map's own error is reported where the source opens it
    channels = t.data.get("channels") or names
    for ch in out:
        if channels and ch not in channels:
            raise ConfigError(f"{st.key(ch)}: not a channel of this source "
                              f"({', '.join(channels)})")
    return out


def _heartbeat(t: Table, source: SourceConfig) -> HeartbeatConfig:
    kind = t.str("kind", choices=HEARTBEAT_KINDS)
    if kind == "serial":
        url = t.str("url", "")
        if url:
            raise ConfigError(f"{t.key('url')}: a serial heartbeat goes on the serial source's "
                              "line (source.url); leave url out")
        if not source.url.startswith("serial:"):
            raise ConfigError(f"{t.key('kind')}: 'serial' needs a serial:// source "
                              f"(source.url is {source.url!r})")
        address, device_id = 0, 1
    else:
        url = t.str("url")
        if not url.startswith(("modbus-tcp://", "modbus-rtu://")):
            raise ConfigError(f"{t.key('url')}: {url!r} is not a modbus-tcp:// or modbus-rtu:// URL")
        from firmware_bridge.errors import ConfigError as BridgeConfigError
        from firmware_bridge.modbus.client import parse_modbus_url

        try:
            parse_modbus_url(url)
        except BridgeConfigError as e:
            raise ConfigError(f"{t.key('url')}: {e}") from None
        address = t.int("address", lo=0, hi=65535)
        device_id = t.int("device_id", 1, lo=0, hi=247)
    period = t.duration("period", 1.0, lo=0.05)
    timeout = t.duration("timeout", min(0.25, period / 2), lo=0.001)
    t.done()
    if timeout >= period:
        raise ConfigError(f"{t.key('timeout')}: {timeout:g} s is not shorter than "
                          f"{t.key('period')} ({period:g} s)")
    return HeartbeatConfig(kind, url, address, device_id, period, timeout)


def _failsafe(t: Table, name: str, default: str) -> str:
    return t.str(name, default, choices=FAILSAFE)


def parse_config(data: dict, base_dir: Path, path: Path | None = None) -> GatewayConfig:
    root = Table(data, "", base_dir)
    device_id = check_device_id(root.str("device_id"), "device_id")
    state_dir = root.path_("state_dir", "state")

    source = _source(root.table("source", required=True))
    if source.url.startswith("sim:"):  # the simulator's vibration: ax, ay, az at rate=
        from firmware_bridge.parsing import split_url

        q = split_url(source.url)[2]
        source = SourceConfig(source.url, source.channels or tuple(
            q.get("channels", "ax,ay,az").split(",")),
            source.rate or float(q.get("rate", 25600)), source.options)
    if not source.channels and not source.url.startswith(("sim:", "modbus")):
        raise ConfigError("source.channels: required for serial sources (e.g. [\"ax\", \"ay\", \"az\"])")
    if source.rate is None and not source.url.startswith(("sim:", "modbus")):
        raise ConfigError("source.rate: required (samples per second of the fast channels)")
    slow = tuple(_source(t) for t in root.tables("slow_sources"))

    ft = root.table("features")
    features = dict(ft.data)
    ft.seen.update(features)

    mt = root.table("model")
    bundle = mt.path_("bundle", None)
    keys = []
    for i, k in enumerate(mt.str_list("trusted_keys", ())):
        kp = Path(k).expanduser()
        if not kp.is_absolute():
            kp = base_dir / kp
        if kp.exists():
            keys.append(str(kp))
        elif re.fullmatch(r"[A-Za-z0-9+/]{42,44}={0,2}", k):
            keys.append(k)  # a base64 raw public key written inline
        else:
            raise ConfigError(f"model.trusted_keys[{i}]: {k!r}: file not found")
    model = ModelConfig(bundle, tuple(keys), mt.bool("allow_unsigned", False),
                        mt.duration("watch", 1.0, lo=0.05))
    mt.done()
    if not model.allow_unsigned and model.bundle is not None and not model.trusted_keys:
        raise ConfigError("model.trusted_keys: required unless model.allow_unsigned = true")

    dt = root.table("decision")
    decision = DecisionConfig(
        k=dt.int("k", 3, lo=1, hi=1000), n=dt.int("n", 5, lo=1, hi=1000),
        hysteresis=dt.float("hysteresis", 0.1, lo=0.0, hi=1.0),
        warn=dt.float("warn", None), alarm=dt.float("alarm", None), trip=dt.float("trip", None),
        startup_inhibit_s=dt.duration("startup_inhibit", 5.0),
    )
    dt.done()
    if decision.k > decision.n:
        raise ConfigError(f"decision.k: {decision.k} is larger than decision.n ({decision.n})")
    levels = [(n, getattr(decision, n)) for n in ("warn", "alarm", "trip")]
    given = [(n, v) for n, v in levels if v is not None]
    for (n1, v1), (n2, v2) in zip(given, given[1:]):
        if v1 > v2:
            raise ConfigError(f"decision.{n2}: {v2} is below decision.{n1} ({v1})")

    limits = []
    for t in root.tables("limits"):
        lim = LimitConfig(t.str("channel"), t.float("above", None), t.float("below", None))
        t.done()
        if lim.above is None and lim.below is None:
            raise ConfigError(f"{t.path}: give 'above' or 'below' (or both)")
        if lim.above is not None and lim.below is not None and lim.below >= lim.above:
            raise ConfigError(f"{t.path}.below: {lim.below} is not below 'above' ({lim.above})")
        limits.append(lim)

    wt = root.table("watchdog")
    watchdog = WatchdogConfig(
        timeout_s=wt.duration("timeout", 0.5, lo=0.001),
        max_gap=wt.int("max_gap", 8, lo=1),
        on_silence=_failsafe(wt, "on_silence", "trip"),
        on_gap=_failsafe(wt, "on_gap", "alarm"),
        on_model_failure=_failsafe(wt, "on_model_failure", "alarm"),
        model_failures=wt.int("model_failures", 3, lo=1),
        on_sensor_fault=_failsafe(wt, "on_sensor_fault", WatchdogConfig.on_sensor_fault),
        sensor_fault_for_s=wt.duration("sensor_fault_for", WatchdogConfig.sensor_fault_for_s),
        frozen_after_s=wt.duration("frozen_after", WatchdogConfig.frozen_after_s),
    )
    wt.done()

    from firmware_bridge.actuators import ActuatorSpec
    from firmware_bridge.errors import ConfigError as BridgeConfigError

    trip = []
    for t in root.tables("trip"):
        try:
            trip.append(ActuatorSpec.from_dict(t.data, key=t.path))
        except BridgeConfigError as e:
            raise ConfigError(str(e)) from None
    rt = root.table("reset")
    reset_input = rt.str("input", None)
    reset_min_interval = rt.duration("min_interval", 10.0, lo=0.0)
    rt.done()
    lt = root.table("latch")
    latch = LatchConfig(path=lt.path_("path", str(state_dir / "latch.json")),
                        verify_every_s=lt.duration("verify_every", 0.5, lo=0.05))
    lt.done()

    bt = root.table("buffer")
    buffer = BufferConfig(
        path=bt.path_("path", str(state_dir / "buffer.db")),
        max_mb=bt.float("max_mb", 256.0, lo=1.0),
        raw_sample_every=bt.int("raw_sample_every", 600, lo=1),
        queue_size=bt.int("queue_size", 20000, lo=16),
    )
    bt.done()
    st = root.table("sync")
    sync = SyncConfig(
        st.str("store", ""), st.duration("every", 60.0, lo=1.0),
        max_bytes_per_run=st.int("max_bytes_per_run", 0, lo=0),
        max_bytes_per_s=st.float("max_bytes_per_s", 0.0, lo=0.0),
        upload_raw=st.bool("upload_raw", True), batch_rows=st.int("batch_rows", 5000, lo=1),
        endpoint=st.str("endpoint", ""), region=st.str("region", ""),
        credentials=st.path_("credentials", None),
        status_window_s=st.duration("status_window", 3600.0, lo=1.0))
    st.done()
    met = root.table("metrics")
    metrics = MetricsConfig(met.str("host", "127.0.0.1"), met.int("port", 9108, lo=0, hi=65535),
                            met.bool("allow_remote", False))
    met.done()
    if not metrics.allow_remote and metrics.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"metrics.host: {metrics.host!r} is not loopback; the control port "
                          "accepts POST /reset without authentication (set "
                          "metrics.allow_remote = true to expose it anyway)")
    dpt = root.table("deploy")
    deploy = DeployConfig(
        fleet=dpt.str("fleet", "default"),
        shadow_windows=dpt.int("shadow_windows", 600, lo=1),
        max_alarm_rate=dpt.float("max_alarm_rate", 0.01, lo=0.0, hi=1.0),
        rate_factor=dpt.float("rate_factor", 2.0, lo=1.0),
        allow_downgrade=dpt.bool("allow_downgrade", True),
    )
    dpt.done()
    check_device_id(deploy.fleet, "deploy.fleet", what="fleet name")
    heartbeat = _heartbeat(root.table("heartbeat"), source) if root.has("heartbeat") else None
    root.done()

    all_channels = set(source.channels)
    for lim_i, lim in enumerate(limits):
        if slow or not all_channels:
            break  # slow sources' channels are known only once their maps are read
        if lim.channel not in all_channels:
            raise ConfigError(
                f"limits[{lim_i}].channel: {lim.channel!r} is not one of source.channels "
                f"({', '.join(sorted(all_channels))})"
            )
    cfg = GatewayConfig(
        path=path or base_dir / "gateway.toml", device_id=device_id, state_dir=state_dir,
        source=source, slow_sources=slow, features=features, model=model, decision=decision,
        limits=tuple(limits), watchdog=watchdog, trip=tuple(trip), reset_input=reset_input,
        buffer=buffer, sync=sync, metrics=metrics, deploy=deploy, heartbeat=heartbeat,
        latch=latch, reset_min_interval_s=reset_min_interval,
    )
    try:  # the windows and features are checked with everything else, before anything runs
        cfg.feature_spec()
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"features: {e}") from None
    return cfg
