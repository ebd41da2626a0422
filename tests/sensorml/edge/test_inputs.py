"""Dead inputs that look alive, unit by unit: :class:`~sensorml.edge.inputs.InputGuard`
with real blocks and a settable monotonic clock (the only fake: no test sleeps), and its
wiring into the real :class:`~sensorml.edge.fastpath.FastPath` with a real ``command``
trip actuator and a real recorder (the ``rig`` of ``test_fastpath.py`` is not shared, so
this file builds the few parts it needs)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.block import Block
from sensorml.edge.inputs import InputGuard


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def fast(x, rate: float = 1000.0, channels=("ax", "ay")) -> Block:
    return Block(0.0, rate, np.asarray(x, np.float32), channels)


def slow(v: float) -> Block:
    return Block(0.0, 10.0, np.array([[v, 1.0]], np.float32), ("temperature_c", "status"))


def noise(n: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, (n, 2))


def phases(events) -> list[tuple]:
    return [(e.phase, e.channel, e.fault) + ((e.action,) if e.action else ()) for e in events]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def guard(clock, **kw) -> InputGuard:
    kw.setdefault("frozen_after_s", 0.5)
    kw.setdefault("persist_s", 2.0)
    kw.setdefault("action", "trip")
    return InputGuard(("ax", "ay"), monotonic=clock, **kw)


def test_nan_that_persists_is_acted_on_once_and_clears_on_a_clean_block(clock):
    g = guard(clock)
    x = noise()
    x[::7, 1] = np.nan
    assert phases(g.fast_block(fast(x))) == [("onset", "ay", "non-finite")]
    clock.t += 1.9
    assert g.fast_block(fast(x)) == [] and g.check() == []  # not yet: 1.9 s < 2 s
    clock.t += 0.2
    assert phases(g.check()) == [("act", "ay", "non-finite", "trip")]
    assert g.check() == []  # once per episode
    assert phases(g.fast_block(fast(noise(seed=1)))) == [("cleared", "ay", "non-finite")]
    assert g.onsets["non-finite"] == 1


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinities_are_non_finite_too(clock, bad):
    x = noise()
    x[5, 0] = bad
    assert phases(guard(clock).fast_block(fast(x))) == [("onset", "ax", "non-finite")]


def test_a_channel_repeating_one_value_for_frozen_after_is_frozen(clock):
    g = guard(clock, frozen_after_s=0.5)
    x = noise()
    x[:, 0] = 0.25  # ax stuck at 0.25 g; 100 samples at 1 kHz = 0.1 s per block
    events = []
    for _ in range(4):
        events += g.fast_block(fast(x))
    assert events == []  # 0.4 s of repeats
    (onset,) = g.fast_block(fast(x))
    assert phases([onset]) == [("onset", "ax", "frozen")] and dict(onset.detail)["value"] == 0.25
    x[50, 0] = 0.2501  # it moved: alive
    assert phases(g.fast_block(fast(x))) == [("cleared", "ax", "frozen")]


def test_a_constant_block_that_differs_from_the_last_one_starts_a_new_run(clock):
    g = guard(clock, frozen_after_s=0.25)
    for v in (0.1, 0.2, 0.3, 0.4):  # each block constant, but the value moves
        x = noise()
        x[:, 0] = v
        assert g.fast_block(fast(x)) == []


def test_frozen_check_off_with_zero(clock):
    g = guard(clock, frozen_after_s=0.0)
    x = np.zeros((100, 2))
    assert all(g.fast_block(fast(x)) == [] for _ in range(20))


def test_a_slow_point_that_does_not_change_within_stale_after_is_stale(clock):
    g = guard(clock, stale_after={"temperature_c": 5.0}, persist_s=1.0, action="alarm")
    g.slow_block(slow(60.0))
    clock.t += 4.0
    g.slow_block(slow(60.0))  # the same reply again
    assert g.check() == []
    g.slow_block(slow(float("nan")))  # a failed read is not a change
    clock.t += 1.5
    (onset,) = g.check()
    assert phases([onset]) == [("onset", "temperature_c", "stale")]
    assert onset.since == pytest.approx(105.0) and dict(onset.detail)["value"] == 60.0
    assert g.check() == []  # stale since 105.0: 0.5 s of the 1 s persistence
    clock.t += 0.6
    assert phases(g.check()) == [("act", "temperature_c", "stale", "alarm")]
    assert phases(g.slow_block(slow(60.1))) == [("cleared", "temperature_c", "stale")]
    clock.t += 4.0
    assert g.check() == []  # "status" has no stale_after: never checked


def test_a_slow_point_that_never_answers_goes_stale_too(clock):
    g = guard(clock, stale_after={"temperature_c": 2.0})
    clock.t += 2.5
    assert phases(g.check()) == [("onset", "temperature_c", "stale")]
