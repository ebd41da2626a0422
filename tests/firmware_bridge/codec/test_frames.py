"""Binary frames: COBS and CRC vectors, byte-exact frame vectors (also printed in
PROTOCOL.md), sequence accounting, and property tests of the incremental decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import cobs
from firmware_bridge.codec.crc import crc32
from firmware_bridge.codec.frames import (
    DecodedFrame,
    FrameDecoder,
    Message,
    decode_frame,
    encode_frame,
    encode_message,
    encode_payload,
)
from firmware_bridge.errors import FrameError

PROTOCOL = (Path(__file__).parents[3] / "firmware_bridge" / "PROTOCOL.md").read_text()

# (decoded, encoded without delimiter): the examples of the COBS paper / Wikipedia
COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_VECTORS)
def test_cobs_matches_reference_vectors(raw, encoded):
    assert cobs.encode(raw) == encoded
    assert cobs.decode(encoded) == raw


@pytest.mark.parametrize(
    ("bad", "where"),
    [(b"\x05\x11\x22", "byte 0 needs 4 bytes, only 2 left"), (b"\x02\x00", "0x00 inside the frame at byte 1"), (b"", "empty")],
)
def test_cobs_errors_name_the_byte_offset(bad, where):
    with pytest.raises(FrameError, match=where):
        cobs.decode(bad)


def test_crc32_check_value():
    assert crc32(b"123456789") == 0xCBF43926


# The test vectors of PROTOCOL.md, checked byte for byte.
FRAME_VECTORS = {
    "f32": (
        lambda: encode_frame(1, 1_000_000, np.array([[1.0, -1.0, 0.5], [0.25, 0.0, 2.0]], np.float32)),
        "0401010101010440420f0101010102030202010103803f0103803f010380bf0101023f0103803e"
        "0101010101010640bc0b9ee900",
    ),
    "i16": (
        lambda: encode_frame(0xFFFFFFFF, 123456789, np.array([[1000], [-1000], [0], [32767]], np.int16), dtype="i16"),
        "0b0101ffffffff15cd5b0701010104010104010107803fe80318fc0107ff7f3904b9e100",
    ),
    "i16 scaled": (
        lambda: encode_frame(42, 0, np.array([[0.5, -0.25]], np.float32), dtype="i16", scale=0.001),
        "0401012a01010101010101010101040201010d6f12833af40106ff6cf64c2300",
    ),
    "message": (lambda: encode_message("ack STOP"), "0f010261636b2053544f501029d48900"),
}


@pytest.mark.parametrize("name", list(FRAME_VECTORS))
def test_frame_vectors_are_byte_exact_and_documented(name):
    make, hex_text = FRAME_VECTORS[name]
    assert make().hex() == hex_text
    assert hex_text in PROTOCOL.replace("\n", "").replace(" ", ""), f"{name} vector missing from PROTOCOL.md"


def test_vectors_decode_to_what_was_encoded():
    f32 = decode_frame(bytes.fromhex(FRAME_VECTORS["f32"][1])[:-1])
    assert (f32.seq, f32.t0_us, f32.sample_type) == (1, 1_000_000, "f32")
    assert f32.samples.tolist() == [[1.0, -1.0, 0.5], [0.25, 0.0, 2.0]]
    i16 = decode_frame(bytes.fromhex(FRAME_VECTORS["i16"][1])[:-1])
    assert i16.seq == 0xFFFFFFFF and i16.samples[:, 0].tolist() == [1000, -1000, 0, 32767]
    scaled = decode_frame(bytes.fromhex(FRAME_VECTORS["i16 scaled"][1])[:-1])
    np.testing.assert_allclose(scaled.samples, [[0.5, -0.25]], rtol=1e-6)
    assert decode_frame(bytes.fromhex(FRAME_VECTORS["message"][1])[:-1]) == Message("ack STOP")


def test_i16_quantises_floats_to_full_scale():
    x = np.random.default_rng(1).normal(size=(500, 3)).astype(np.float32)
    got = decode_frame(encode_frame(0, 0, x, dtype="i16")[:-1]).samples
    step = np.abs(x).max() / 32767
    assert np.abs(got - x).max() <= step * 0.51
    got32 = decode_frame(encode_frame(0, 0, x, dtype="i32")[:-1]).samples
    np.testing.assert_allclose(got32, x, atol=1e-6)


def _payload_frame(payload: bytes) -> bytes:
    return cobs.encode(payload) + b"\x00"


def test_bad_crc_header_and_cobs_are_counted_separately():
    x = np.ones((4, 2), np.float32)
    good = encode_payload(0, 0, x)
    bad_crc = good[:-1] + bytes([good[-1] ^ 0xFF])
    body = b"\x02" + good[1:-4]  # version 2, with a correct CRC
    bad_version = body + crc32(body).to_bytes(4, "little")
    body = good[:-4] + b"\x00\x00"  # two more bytes than the header says
    bad_size = body + crc32(body).to_bytes(4, "little")
    dec = FrameDecoder()
    out = dec.feed(_payload_frame(bad_crc) + _payload_frame(bad_version) + _payload_frame(bad_size)
                   + b"\x09\x01\x00" + _payload_frame(good))
    assert len(out) == 1 and out[0].rejected == 4
    assert (dec.crc_errors, dec.format_errors, dec.cobs_errors, dec.rejected) == (1, 2, 1, 4)
    assert "header says 4 x 2 f32 samples" in _last_error_of(bad_size)


def _last_error_of(frame_payload: bytes) -> str:
    dec = FrameDecoder()
    dec.feed(_payload_frame(frame_payload))
    return dec.last_error


def _frames(seqs, n=4):
    return b"".join(encode_frame(s, s * 100, np.full((n, 1), s % 1000, np.float32)) for s in seqs)


def test_sequence_gaps_count_missed_frames_and_wrap_is_not_a_gap():
    dec = FrameDecoder()
    out = dec.feed(_frames([0, 1, 2, 5, 6]))
    assert [f.missed for f in out] == [0, 0, 0, 2, 0]
    assert (dec.gaps, dec.missed) == (1, 2)
    dec = FrameDecoder()
    out = dec.feed(_frames([2**32 - 2, 2**32 - 1, 0, 1, 3]))
    assert [f.missed for f in out] == [0, 0, 0, 0, 1]
    assert (dec.gaps, dec.missed, dec.restarts) == (1, 1, 0)


def test_sequence_going_backwards_is_a_restart_not_a_huge_gap():
    dec = FrameDecoder()
    out = dec.feed(_frames([100, 101, 0, 1]))
    assert [f.restart for f in out] == [False, False, True, False]
    assert (dec.gaps, dec.missed, dec.restarts) == (0, 0, 1)


def test_oversize_garbage_without_delimiter_is_dropped_then_decoding_resumes():
    dec = FrameDecoder(max_payload=1024)
    frame = _frames([7])
    out = []
    for _ in range(10):
        out += dec.feed(b"\x01\x02\x03" * 200)  # 6000 bytes and no 0x00: memory stays bounded
        assert len(dec._buf) <= dec.max_encoded
    out += dec.feed(b"\x00" + frame)
    assert [f.seq for f in out] == [7]
    assert dec.rejected == 1 and dec.bytes_skipped == 6001


def test_idle_zero_fill_is_ignored():
    dec = FrameDecoder()
    out = dec.feed(b"\x00\x00\x00" + _frames([1]) + b"\x00\x00")
    assert len(out) == 1 and dec.rejected == 0 and dec.bytes_skipped == 0


# ---------------------------------------------------------------- properties

frames_st = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**64 - 1),
        st.integers(0, 40),
        st.integers(1, 4),
        st.sampled_from(["f32", "i16", "i32"]),
    ),
    min_size=1,
    max_size=6,
)


def _make(spec, seed=0):
    seq, t0, n, ch, dtype = spec
    x = np.random.default_rng(seq % 1000).normal(size=(n, ch)).astype(np.float32)
    if dtype != "f32":
        x = np.rint(x * 1000).astype(np.int16 if dtype == "i16" else np.int32)
    return encode_frame(seq, t0, x, dtype=dtype), x


def _key(item):
    if isinstance(item, Message):
        return ("msg", item.text)
    return (item.seq, item.t0_us, item.samples.tobytes())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_garbage_never_raises(data):
    dec = FrameDecoder()
    out = dec.feed(data)
    assert all(isinstance(x, DecodedFrame | Message) for x in out)
    assert dec.bytes_skipped <= len(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_st, st.lists(st.binary(max_size=300), min_size=7, max_size=7), st.text(max_size=20))
def test_frames_between_garbage_are_all_recovered(specs, garbage, text):
    """Garbage before a frame may eat the frame it runs into, so a device (like ours)
    that wants a clean start after noise sends 0x00 first: garbage + 0x00 + frame."""
    stream = b""
    expected = []
    for spec, junk in zip(specs, garbage, strict=False):
        wire, x = _make(spec)
        stream += junk + b"\x00" + wire
        expected.append((spec[0], spec[1], x.astype(np.float32).tobytes()))
    stream += garbage[-1] + b"\x00" + encode_message(text)
    expected.append(("msg", text))
    out = FrameDecoder().feed(stream)
    assert [_key(i) for i in out] == expected


@settings(max_examples=200, deadline=None)
@given(frames_st, st.binary(max_size=200), st.lists(st.integers(0, 10_000), max_size=8))
def test_splitting_the_stream_anywhere_gives_the_same_result(specs, junk, cuts):
    stream = junk + b"".join(_make(s)[0] for s in specs) + junk
    whole = FrameDecoder()
    expected = [_key(i) for i in whole.feed(stream)]
    dec = FrameDecoder()
    got = []
    prev = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        got += [_key(i) for i in dec.feed(stream[prev:cut])]
        prev = cut
    assert got == expected
    assert dec.counters() == whole.counters()


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=1200),
    # zero-heavy payloads (i16 near zero, 0.0 floats) take the vectorised path
    st.lists(st.sampled_from([0, 0, 1, 2, 255]), max_size=3000).map(bytes),
))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    enc = cobs.encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs.decode(enc) == data
