"""Windower and SlowTracker: windows are exactly the slices of the stream, gaps reset,
channels are picked by name, slow channels keep the last seconds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from firmware_bridge.block import Block, Quality
from sensorml.edge.features import FeatureExtractor, FeatureSpec, compute_features
from sensorml.edge.windowing import SlowTracker, Windower
from sensorml.errors import ConfigError

RATE = 1000.0


def spec_for(window: int, hop: int, channels=("ax", "ay", "az"), **kw) -> FeatureSpec:
    return FeatureSpec(channels=channels, sample_rate=RATE, window=window, hop=hop,
                       bands=((0.0, RATE / 2),), **kw)


def stream(n: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def blocks_of(data: np.ndarray, sizes: list[int], channels=("ax", "ay", "az"),
              quality: dict[int, Quality] | None = None) -> list[Block]:
    out, pos = [], 0
    for i, s in enumerate(sizes):
        out.append(Block(t0=10.0 + pos / RATE, rate=RATE, samples=data[pos:pos + s],
                         channels=channels, seq=i, t_recv=100.0 + i,
                         quality=(quality or {}).get(i, Quality.GOOD)))
        pos += s
    return out


@settings(max_examples=60, deadline=None)
@given(window=hs.integers(4, 300), hop_frac=hs.floats(0.01, 1.0),
       sizes=hs.lists(hs.integers(0, 700), min_size=1, max_size=40))
def test_windows_are_the_slices_of_the_concatenated_stream(window, hop_frac, sizes) -> None:
    hop = max(1, int(window * hop_frac))
    total = sum(sizes)
    data = stream(total)
    w = Windower(spec_for(window, hop))
    got = []
    for b in blocks_of(data, sizes):
        got += w.push(b)
    expected = 0 if total < window else (total - window) // hop + 1
    assert len(got) == expected
    for k, win in enumerate(got):
        assert win.seq == k
        np.testing.assert_array_equal(win.data, data[k * hop:k * hop + window])
        assert win.data.dtype == np.float32 and win.data.flags.c_contiguous
        assert win.t_end == pytest.approx(10.0 + (k * hop + window - 1) / RATE)
        assert win.quality == Quality.GOOD


def test_window_completed_by_a_block_is_emitted_by_that_push() -> None:
    w = Windower(spec_for(8, 4))
    data = stream(16)
    b = blocks_of(data, [7, 1, 3, 1, 4])
    assert w.push(b[0]) == []
    (first,) = w.push(b[1])  # the 8th sample completes window 0
    assert first.t_recv == 101.0 and first.t_end == pytest.approx(10.007)
    assert w.push(b[2]) == []
    (second,) = w.push(b[3])
    assert second.t_recv == 103.0
    np.testing.assert_array_equal(second.data, data[4:12])
    assert [x.seq for x in w.push(b[4])] == [2]


def test_one_block_can_complete_many_windows_and_data_is_ours_to_keep() -> None:
    w = Windower(spec_for(256, 64))
    data = stream(50_000)
    wins = w.push(blocks_of(data, [50_000])[0])
    assert len(wins) == (50_000 - 256) // 64 + 1
    keep = wins[0].data.copy()
    w.push(blocks_of(stream(5000, seed=1), [5000])[0])
    np.testing.assert_array_equal(wins[0].data, keep)  # not a view of the ring
    assert not np.shares_memory(wins[0].data, wins[1].data)


def test_gap_resets_so_no_window_spans_it() -> None:
    w = Windower(spec_for(10, 5))
    data = stream(60)
    b = blocks_of(data, [12, 13, 35], quality={1: Quality.GAP})
    assert len(w.push(b[0])) == 1  # samples 0..9; 10, 11 wait for more
    wins = w.push(b[1]) + w.push(b[2])  # counting restarts at sample 12, the gap's block
    starts = [12 + 5 * k for k in range(len(wins))]
    assert len(wins) == (48 - 10) // 5 + 1
    for s, win in zip(starts, wins):
        np.testing.assert_array_equal(win.data, data[s:s + 10])
    assert wins[0].quality == Quality.GAP  # holds samples of the block after the gap
    assert wins[1].quality == Quality.GAP and wins[-1].quality == Quality.GOOD
    assert w.resets == 1 and w.seq == 1 + len(wins)


def test_quality_flags_are_ored_from_the_blocks_in_the_window() -> None:
    w = Windower(spec_for(4, 4))
    data = stream(16)
    b = blocks_of(data, [2, 2, 2, 2, 8],
                  quality={1: Quality.CRC, 2: Quality.PARTIAL | Quality.STALE})
    wins = [x for blk in b for x in w.push(blk)]
    assert [x.quality for x in wins] == [
        Quality.CRC, Quality.PARTIAL | Quality.STALE, Quality.GOOD, Quality.GOOD]


def test_channels_are_picked_by_name() -> None:
    spec = spec_for(4, 4)
    data = stream(8, c=4)
    src = ("temp", "az", "ax", "ay")
    (win, _) = [x for b in blocks_of(data, [8], channels=src) for x in Windower(spec).push(b)]
    np.testing.assert_array_equal(win.data, data[:4][:, [2, 3, 1]])
    with pytest.raises(ConfigError, match=r"source gives channels \(a, b\), spec needs ax, ay, az"):
        Windower(spec, channels=("a", "b"))
    with pytest.raises(ConfigError, match="spec needs az"):
        Windower(spec).push(blocks_of(stream(4, c=2), [4], channels=("ax", "ay"))[0])


def test_windows_feed_the_extractor_like_the_reference() -> None:
    spec = FeatureSpec(channels=("ax", "ay", "az"), sample_rate=RATE, window=128, hop=32)
    data = stream(1000)
    w, ext = Windower(spec), FeatureExtractor(spec)
    wins = [x for b in blocks_of(data, [100] * 10) for x in w.push(b)]
    for win in wins:
        s = win.seq * 32
        np.testing.assert_allclose(ext(win.data), compute_features(data[s:s + 128], spec),
                                   rtol=2e-6, atol=2e-6)


# ------------------------------------------------------------------ slow
def slow_spec(**kw) -> FeatureSpec:
    return FeatureSpec(channels=("ax",), sample_rate=RATE, window=16, bands=((0, 500),),
                       slow_channels=("temperature_c", "current_a"), **kw)


def poll(t: float, values: dict[str, float], ok: list[bool] | None = None) -> Block:
    names = tuple(values)
    return Block(t0=t, rate=1.0, samples=np.array([list(values.values())], np.float32),
                 channels=names, point_ok=None if ok is None else np.array(ok))


def test_slow_tracker_keeps_the_last_seconds_and_merges_sources() -> None:
    st = SlowTracker(slow_spec(slow_window_s=10.0))
    assert not st.ready() and st.window().values.shape == (0, 2)
    for t in range(20):
        st.push(poll(float(t), {"temperature_c": 40 + 0.5 * t, "pressure_bar": 3.0}))
        st.push(poll(t + 0.5, {"current_a": 10.0 + t}))
    sw = st.window()
    assert sw.t[0] > 19.5 - 10 and sw.t[-1] == 19.5
    assert st.window() is sw  # cached until the next push
    assert st.ready()
    f = dict(zip(slow_spec().names(), compute_features(np.ones((16, 1)), slow_spec(), sw)))
    assert f["temperature_c.slope"] == pytest.approx(0.5, rel=1e-5)
    assert f["current_a.slope"] == pytest.approx(1.0, rel=1e-5)
    assert f["temperature_c.last"] == pytest.approx(49.5)
    assert f["current_a.last"] == pytest.approx(29.0)


def test_points_not_read_are_missing_not_values() -> None:
    st = SlowTracker(slow_spec())
    st.push(poll(0.0, {"temperature_c": 40.0, "current_a": 10.0}))
    st.push(poll(1.0, {"temperature_c": 41.0, "current_a": -9999.0}, ok=[True, False]))
    st.push(poll(2.0, {"temperature_c": 42.0, "current_a": 10.0}))
    assert np.isnan(st.window().values[1, 1])
    assert st.ready()
    f = dict(zip(slow_spec().names(), FeatureExtractor(slow_spec())(np.ones((16, 1)),
                                                                       st.window())))
    assert f["current_a.mean"] == 10.0 and f["current_a.slope"] == 0.0


def test_slow_tracker_is_not_ready_until_every_channel_has_two_times() -> None:
    st = SlowTracker(slow_spec())
    st.push(poll(0.0, {"temperature_c": 40.0}))
    st.push(poll(1.0, {"temperature_c": 40.0, "current_a": 3.0}))
    assert not st.ready()
    st.push(poll(2.0, {"current_a": 3.0}))
    assert st.ready()


def test_extra_trailing_channels_are_ignored() -> None:
    data = stream(8, c=5)
    b = blocks_of(data, [8], channels=("ax", "ay", "az", "temp", "current"))[0]
    (win, _) = Windower(spec_for(4, 4)).push(b)
    np.testing.assert_array_equal(win.data, data[:4, :3])
