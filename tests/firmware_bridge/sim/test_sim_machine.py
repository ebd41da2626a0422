"""The simulated machine's signal model, faults, replay and the in-process ``sim://`` source.

Spectral checks use numpy FFTs of a few seconds of signal: each fault must show where a
vibration analyst would look for it (envelope spectrum for bearings, orders for
imbalance/misalignment/looseness, high-frequency energy for cavitation).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.block import Quality
from firmware_bridge.errors import ConfigError
from firmware_bridge.sim.faults import BearingGeometry, FaultEvent
from firmware_bridge.sim.machine import Machine
from firmware_bridge.sim.replay import Replay, make_sample, read_table, record
from firmware_bridge.sim.schedule import SetPoint
from firmware_bridge.sources import open_source

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sim" / "pump_outer_race_2k.csv"
RATE = 8192.0
SECONDS = 4


def run(fault: str | None = None, seed: int = 3, **kw) -> tuple[Machine, np.ndarray]:
    m = Machine("pump", rate=RATE, seed=seed, **kw)
    if fault:
        m.inject(fault, 1.0)
    return m, m.generate(int(RATE * SECONDS)).astype(np.float64)


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-sided amplitude spectrum (g) with a Hann window."""
    n = len(x)
    w = np.hanning(n) if x.ndim == 1 else np.hanning(n)[:, None]
    s = np.abs(np.fft.rfft(x * w, axis=0)) * (4.0 / n)
    return np.fft.rfftfreq(n, 1 / RATE), s


def envelope_spectrum(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum of the envelope of ``x`` band-passed to lo..hi Hz (analytic signal by FFT)."""
    n = len(x)
    X = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / RATE)
    X[(f < lo) | (f > hi)] = 0
    z = np.zeros(n, complex)
    z[: len(X)] = X
    z[1 : len(X) - 1] *= 2
    env = np.abs(np.fft.ifft(z))
    return spectrum(env - env.mean())


def peak(f: np.ndarray, s: np.ndarray, f0: float, bw: float = 1.5) -> float:
    return float(s[(f > f0 - bw) & (f < f0 + bw)].max())


def test_same_seed_same_signal_and_any_block_split_gives_the_same_stream():
    a = Machine(rate=2000.0, seed=5, faults=[FaultEvent("spikes", at=0.2)]).generate(1000)
    m = Machine(rate=2000.0, seed=5, faults=[FaultEvent("spikes", at=0.2)])
    b = np.concatenate([m.generate(k) for k in (1, 299, 256, 444)])
    assert a.dtype == np.float32 and a.shape == (1000, 3)
    assert np.array_equal(a, b)  # phase-continuous: blocks join exactly
    assert not np.array_equal(a, Machine(rate=2000.0, seed=6).generate(1000))


def test_no_click_at_control_tick_boundaries_during_a_speed_ramp():
    m = Machine(rate=RATE, seed=1, noise_g=0.0, schedule=[SetPoint(0.0, rpm=1500.0, ramp_s=1.0)])
    m.inject("imbalance", 1.0)
    x = m.generate(int(RATE))[:, 0].astype(np.float64)
    d = np.abs(np.diff(x))
    k = m._k  # control tick length in samples
    at_ticks = d[k - 1 :: k]
    assert at_ticks.max() < 1.5 * np.quantile(d, 0.999)


def test_bearing_frequencies_follow_the_textbook_formulas():
    g = BearingGeometry(n_balls=8, ball_d_mm=10.0, pitch_d_mm=50.0, contact_deg=15.0)
    r = 10.0 / 50.0 * np.cos(np.radians(15.0))
    f = g.frequencies(25.0)
    assert f["ftf"] == pytest.approx(12.5 * (1 - r))
    assert f["bpfo"] == pytest.approx(8 * 12.5 * (1 - r))
    assert f["bpfi"] == pytest.approx(8 * 12.5 * (1 + r))
    assert f["bsf"] == pytest.approx(50.0 * 25.0 / 20.0 * (1 - r * r))


@pytest.mark.parametrize(
    "fault, line",
    [("outer_race", lambda d: d["bpfo"]), ("inner_race", lambda d: d["bpfi"]), ("ball", lambda d: 2 * d["bsf"])],
)
def test_bearing_faults_show_in_the_envelope_spectrum_at_their_defect_frequency(fault, line):
    healthy_m, healthy = run()
    m, x = run(fault)
    f0 = line(m.defect_frequencies()) * 0.99  # rolling elements slip ~1 %
    band = (0.7 * m.f_res, 1.3 * m.f_res)
    fh, eh = envelope_spectrum(healthy[:, 0], *band)
    ff, ef = envelope_spectrum(x[:, 0], *band)
    assert peak(ff, ef, f0) > 10 * peak(fh, eh, f0)
    assert peak(ff, ef, f0) > 20 * np.median(ef)  # a clear line, not raised noise
    if fault == "inner_race":  # modulated by the shaft: sidebands at BPFI ± fr
        fr = m.defect_frequencies()["fr"]
        assert peak(ff, ef, fr) > 10 * peak(fh, eh, fr)


def test_imbalance_raises_1x_radially_and_misalignment_raises_2x_and_axial():
    m, h = run()
    fr = m.defect_frequencies()["fr"]
    f, sh = spectrum(h)
    _, si = spectrum(run("imbalance")[1])
    _, sm = spectrum(run("misalignment")[1])
    assert peak(f, si[:, 0], fr) > 4 * peak(f, sh[:, 0], fr)
    assert peak(f, si[:, 1], fr) > 4 * peak(f, sh[:, 1], fr)
    assert peak(f, si[:, 0], 2 * fr) == pytest.approx(peak(f, sh[:, 0], 2 * fr), rel=0.3)
    assert peak(f, sm[:, 0], 2 * fr) > 4 * peak(f, sh[:, 0], 2 * fr)
    assert peak(f, sm[:, 2], fr) > 4 * peak(f, sh[:, 2], fr)  # axial 1x


def test_looseness_raises_many_harmonics_and_half_orders():
    m, h = run()
    fr = m.defect_frequencies()["fr"]
    f, sh = spectrum(h)
    _, sl = spectrum(run("looseness")[1])
    for order in (0.5, 1.5, 4, 7, 8):
        assert peak(f, sl[:, 1], order * fr) > 4 * peak(f, sh[:, 1], order * fr), order


def test_cavitation_raises_high_frequency_noise_and_lowers_pressure():
    mh, h = run()
    mc, c = run("cavitation")
    f, sh = spectrum(h)
    _, sc = spectrum(c)
    hf = f > 1500
    assert np.sum(sc[hf] ** 2) > 20 * np.sum(sh[hf] ** 2)
    assert mc.slow_values()["pressure_bar"] < 0.9 * mh.slow_values()["pressure_bar"]


def test_overheating_raises_temperature_with_a_first_order_lag():
    m = Machine(rate=1000.0, seed=1, thermal_tau_s=2.0)
    t0 = m.slow_values()["temperature_c"]
    m.inject("overheating", 1.0)
    m.generate(2000)  # one time constant: ~63 % of the 45 degC rise
    t1 = m.slow_values()["temperature_c"]
    m.generate(8000)
    t2 = m.slow_values()["temperature_c"]
    assert 20 < t1 - t0 < 36
    assert t2 - t0 == pytest.approx(45.0, abs=2.0)


def test_sensor_faults_dropout_stuck_and_spikes():
    m = Machine(rate=2000.0, seed=2)
    m.generate(500)
    m.inject("stuck")
    x = m.generate(500)
    assert np.all(x == x[0]) and np.any(x[0] != 0)
    m.clear_faults()
    m.inject("dropout")
    x = m.generate(500)
    assert m.sensor_silent and not x.any()
    m.clear_faults("dropout")
    m.inject("spikes")
    x = m.generate(4000)
    assert not m.sensor_silent
    assert 10 < int(np.sum(np.abs(x) > 4.0)) < 200  # ~20 spikes/s per axis at severity 1


def test_scheduled_fault_ramps_its_severity():
    m = Machine(rate=1000.0, seed=1, faults=[FaultEvent("imbalance", at=1.0, severity=0.8, ramp_s=2.0)])
    m.generate(1000)
    assert m.active_faults() == {}
    m.generate(1000)
    assert m.active_faults()["imbalance"] == pytest.approx(0.4, abs=0.02)
    m.generate(2000)
    assert m.active_faults()["imbalance"] == pytest.approx(0.8)


def test_stop_coasts_down_to_the_noise_floor_and_reset_restarts():
    m = Machine(rate=2000.0, seed=4, coast_s=0.5, start_s=1.0)
    m.inject("outer_race", 1.0)
    running = float(np.sqrt(np.mean(m.generate(2000) ** 2)))
    m.stop()
    assert m.stopped and m.status == "coasting"
    first = float(np.sqrt(np.mean(m.generate(200) ** 2)))
    m.generate(6000)  # 3 s = 6 time constants
    dead = float(np.sqrt(np.mean(m.generate(2000) ** 2)))
    slow = m.slow_values()
    assert running > first > dead
    assert dead < 0.01 * running + 2 * m.noise_g
    assert m.status == "stopped" and slow["speed_rpm"] < 10 and slow["current_a"] < 0.1
    m.reset()
    m.generate(1000)
    assert m.status == "starting" and 0.3 < m.slow_values()["speed_rpm"] / 2970 < 0.7
    m.generate(2000)
    assert m.status == "running"
    assert float(np.sqrt(np.mean(m.generate(2000) ** 2))) > 0.7 * running


def test_speed_schedule_moves_the_running_speed_lines():
    m = Machine(rate=RATE, seed=1, schedule=[SetPoint(1.0, rpm=1800.0, ramp_s=2.0)])
    m.inject("imbalance")
    m.generate(int(RATE * 4))
    assert m.slow_values()["speed_rpm"] == pytest.approx(1800.0, abs=3)
    f, s = spectrum(m.generate(int(RATE * 2)).astype(np.float64)[:, 0])
    assert f[np.argmax(s[f < 500])] == pytest.approx(30.0, abs=0.6)


def test_bad_settings_are_one_line_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"rate: 100 samples/s is not in 1000..25600"):
        Machine(rate=100.0)
    with pytest.raises(ConfigError, match="'rust' is not a known fault"):
        Machine().inject("rust")
    with pytest.raises(ConfigError, match="profile: 'fan'"):
        Machine("fan")


def test_recording_replays_through_the_same_outputs(tmp_path):
    path = tmp_path / "rec.csv"
    m = Machine(rate=2000.0, seed=9)
    rows = record(path, m, 0.5, slow=("temperature_c",))
    names, data, rate = read_table(path)
    assert rows == 1000 and names == ("ax", "ay", "az", "temperature_c") and rate == 2000.0
    again = Machine(rate=2000.0, seed=9).generate(1000)
    assert np.allclose(data[:, :3], again, atol=1e-3, rtol=1e-3)
    r = Replay(path, columns=("az", "ax"), loop=False)
    x = r.generate(1500)
    assert r.channels == ("az", "ax") and np.array_equal(x[:1000], data[:1000, [2, 0]])
    assert r.exhausted and r.sensor_silent and not x[1000:].any()
    assert "temperature_c" in r.slow_values()


def test_shipped_sample_recording_is_reproducible(tmp_path):
    made = tmp_path / "sample.csv"
    make_sample(made)
    assert made.read_text() == SAMPLE.read_text()
    with pytest.raises(ConfigError, match="--columns: bogus not in"):
        Replay(SAMPLE, columns=("bogus",))


class Sink:
    """A bounded consumer: with realtime=0 the source runs only as fast as it takes blocks."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.closed = threading.Event()

    def put(self, block) -> None:
        while not self.closed.is_set():
            try:
                self.q.put(block, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self):
        return self.q.get(timeout=5)


def first_block(url: str):
    """The first block a ``sim://`` source gives (its reader stopped afterwards)."""
    sink = Sink()
    src = open_source(url, sink.put)
    src.start()
    try:
        return sink.get()
    finally:
        sink.closed.set()
        src.stop()


def test_sim_source_streams_blocks_as_fast_as_taken_and_obeys_stop():
    sink = Sink()
    src = open_source("sim://pump?rate=2000&block=100&realtime=0&seed=1&coast=0.2s", sink.put)
    assert src.channels == ("ax", "ay", "az")
    src.start()
    blocks = [sink.get() for _ in range(5)]
    assert [b.seq for b in blocks] == [0, 1, 2, 3, 4]
    assert blocks[0].samples.shape == (100, 3) and blocks[0].rate == 2000.0
    assert blocks[1].t0 - blocks[0].t0 == pytest.approx(0.05)
    assert blocks[0].meta["status"] == "running" and "temperature_c" in blocks[0].meta["slow"]
    src.send_command("STOP")
    after = [sink.get() for _ in range(40)]  # 2 s of machine time = 10 coast time constants
    sink.closed.set()
    src.stop()
    assert after[-1].meta["status"] in ("coasting", "stopped")
    assert np.sqrt(np.mean(after[-1].samples ** 2)) < 0.02 < np.sqrt(np.mean(blocks[0].samples ** 2))


def test_sim_source_dropout_means_no_blocks_then_a_gap():
    sink = Sink()
    events: list = []
    got_recovered = threading.Event()

    def on_event(ev):
        events.append(ev)
        if ev.kind == "recovered":
            got_recovered.set()

    src = open_source("sim://pump?rate=2000&block=100&realtime=0&seed=1", sink.put, on_event)
    with src.lock:
        src.machine.inject("dropout")
    src.start()
    assert events == [] or events[0].kind == "outage"
    with src.lock:
        src.machine.clear_faults()
    assert got_recovered.wait(5)
    first = sink.get()
    sink.closed.set()
    src.stop()
    assert first.quality == Quality.GAP | Quality.RECOVERED and first.seq > 0
    assert [e.kind for e in events][:2] == ["outage", "recovered"]


def test_sim_source_slow_mode_and_replay_urls():
    b = first_block("sim://pump?rate=2000&slow=1&realtime=0")
    assert b.channels == ("temperature_c", "current_a", "pressure_bar", "speed_rpm")
    assert b.samples.shape == (1, 4) and b.rate == pytest.approx(10.0)
    b = first_block(f"sim://replay?file={SAMPLE}&realtime=0&block=512")
    assert b.channels == ("ax", "ay", "az") and b.rate == 2048.0
    with pytest.raises(ConfigError, match="fault"):
        open_source("sim://pump?fault=rust", print)


def test_sim_url_fault_schedule_and_inject_while_running():
    sink = Sink()
    src = open_source("sim://pump?rate=2000&realtime=0&block=200&faults=imbalance@0.5s*0.5,spikes@1s", sink.put)
    src.start()
    seen = {}
    while "spikes" not in seen:
        seen = sink.get().meta["faults"]
    assert seen == {"imbalance": 0.5, "spikes": 1.0}
    src.inject("overheating", 0.3)
    src.clear_faults("spikes")
    while "overheating" not in seen:
        seen = sink.get().meta["faults"]
    sink.closed.set()
    src.stop()
    assert seen == {"imbalance": 0.5, "overheating": 0.3}
    with pytest.raises(ConfigError, match=r"faults\[1\]: 'rust' is not a known fault"):
        open_source("sim://pump?faults=imbalance,rust", print)


def test_sim_url_mistakes_name_the_key_and_channels_select_columns():
    with pytest.raises(ConfigError, match="unknown parameter 'fualt'"):
        open_source("sim://pump?fualt=outer_race", print)
    with pytest.raises(ConfigError, match="channels: bx not in ax, ay, az"):
        open_source("sim://pump?channels=bx", print)
    b = first_block("sim://motor?rate=2000&realtime=0&channels=az,ax")
    assert b.channels == ("az", "ax") and b.samples.shape == (256, 2)
