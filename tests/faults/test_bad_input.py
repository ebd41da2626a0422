"""Bad input: the wire decoders and the configuration loaders against garbage.

- 10^6 random bytes through :class:`FrameDecoder` and :class:`CsvDecoder` in random
  chunk sizes: no exception, output well-formed;
- 10^4 malformed frames (bit flips, cuts, extensions, wrong header fields, a wrong CRC)
  between valid ones: no exception, every valid frame recovered with its samples, no
  malformed one accepted; CSV the same with malformed lines;
- hypothesis: valid frames and lines embedded in arbitrary garbage and split at
  arbitrary points are all recovered;
- register map and gateway config files of garbage (random bytes, a valid config with
  bytes overwritten): one line naming the file, never a traceback.

Mutations of valid configs (a wrong type, a bad value, unknown and missing keys) are in
``test_bad_config.py``.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import cobs
from firmware_bridge.codec.csvlines import CsvDecoder, encode_csv
from firmware_bridge.codec.frames import FrameDecoder, encode_frame, encode_payload

pytestmark = pytest.mark.timeout(120)

SEED = 6
# a key path: name, name.name, name[3].name ... followed by ':'
KEY_PATH = re.compile(r"^[A-Za-z_][\w-]*(\[\d+\])?(\.[A-Za-z_][\w-]*(\[\d+\])?)*: ")


def _chunks(data: bytes, rng: np.random.Generator, top: int = 4096):
    i = 0
    while i < len(data):
        n = int(rng.integers(1, top))
        yield data[i:i + n]
        i += n


# ------------------------------------------------------------------ frames
def test_a_million_random_bytes_through_both_decoders(fault_report):
    rng = np.random.default_rng(SEED)
    data = rng.integers(0, 256, 1_000_000, dtype=np.uint8).tobytes()
    fd = FrameDecoder()
    out = [x for c in _chunks(data, rng) for x in fd.feed(c)]
    assert fd.bytes_in == len(data)
    assert all(getattr(x, "samples", np.zeros((0, 1))).ndim == 2 for x in out)
    cd = CsvDecoder(("ax", "ay", "az"))
    n_rows = 0
    for c in _chunks(data, rng):
        r, _ = cd.feed(c)
        assert r.dtype == np.float32 and r.ndim == 2 and r.shape[1] == 3
        n_rows += r.shape[0]
    # text-like garbage too: digits, commas, signs, newlines, 'e', 'nan'
    alphabet = np.frombuffer(b"0123456789,,,.-+eE \n\n#nainf\r", np.uint8)
    text = alphabet[rng.integers(0, len(alphabet), 1_000_000)].tobytes()
    for c in _chunks(text, rng):
        r, _ = cd.feed(c)
        assert r.shape[1] == 3 and r.dtype == np.float32
        n_rows += r.shape[0]
    fault_report.add("bad_input_random_bytes", frame_decoder_bytes=len(data),
                     frame_items_out=len(out), frame_rejected=fd.rejected,
                     csv_bytes=2 * len(data), csv_rows_out=n_rows, csv_bad_lines=cd.bad_lines,
                     exceptions=0)


def _malformed(rng: random.Random, seq: int) -> bytes:
    """One malformed frame on the wire (always ending at a delimiter)."""
    x = np.full((8, 3), 0.5, np.float32)
    good = encode_frame(seq, 1000 * seq, x)
    kind = rng.randrange(7)
    if kind == 0:  # a bit flipped anywhere but the delimiter
        b = bytearray(good)
        b[rng.randrange(len(b) - 1)] ^= 1 << rng.randrange(8)
        return bytes(b) + (b"" if b[-1] == 0 else b"\x00")
    if kind == 1:  # cut short
        return good[:rng.randrange(1, len(good) - 1)] + b"\x00"
    if kind == 2:  # extra bytes inside the frame
        return good[:-1] + bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 9))) + b"\x00"
    if kind == 3:  # header says more samples than it carries
        p = bytearray(encode_payload(seq, 0, x))
        p[16:18] = (9).to_bytes(2, "little")
        from firmware_bridge.codec.crc import crc32

        p[-4:] = crc32(bytes(p[:-4])).to_bytes(4, "little")
        return cobs.encode(bytes(p)) + b"\x00"
    if kind == 4:  # wrong CRC
        p = bytearray(encode_payload(seq, 0, x))
        p[-1] ^= 0xFF
        return cobs.encode(bytes(p)) + b"\x00"
    if kind == 5:  # unknown version / type / sample type, CRC right
        p = bytearray(encode_payload(seq, 0, x))
        p[rng.choice((0, 1, 15))] = 0x7F
        from firmware_bridge.codec.crc import crc32

        p[-4:] = crc32(bytes(p[:-4])).to_bytes(4, "little")
        return cobs.encode(bytes(p)) + b"\x00"
    # bad COBS: a code byte pointing past the end
    return bytes([0xFF]) + good[1:10] + b"\x00"


def test_ten_thousand_malformed_frames_between_valid_ones(fault_report):
    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    wire, valid = bytearray(), []
    for i in range(10_000):
        wire += _malformed(rng, 1_000_000 + i)
        if i % 4 == 0:
            x = nrng.normal(size=(16, 3)).astype(np.float32)
            valid.append((len(valid), x))
            wire += encode_frame(len(valid) - 1, 0, x)
    dec = FrameDecoder()
    got = [f for c in _chunks(bytes(wire), nrng, 2000) for f in dec.feed(c)]
    frames = [f for f in got if hasattr(f, "samples")]
    assert [f.seq for f in frames] == [s for s, _ in valid]  # none lost, none invented
    for f, (_, x) in zip(frames, valid):
        np.testing.assert_array_equal(f.samples, x)
    assert dec.rejected >= 10_000
    fault_report.add("bad_input_malformed_frames", malformed=10_000, valid=len(valid),
                     recovered=len(frames), rejected=dec.rejected, crc_errors=dec.crc_errors,
                     cobs_errors=dec.cobs_errors, format_errors=dec.format_errors)


def test_malformed_csv_lines_between_valid_ones(fault_report):
    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    bad_lines = [b"1,2\n", b"1,2,3,4\n", b"a,b,c\n", b",,\n", b"1,,3\n", b"1;2;3\n",
                 b"\xff\xfe,1,2\n", b"1e999999x,2,3\n", b"0x10,1,2\n", b"- ,1,2\n"]
    wire, valid = bytearray(), []
    for i in range(10_000):
        wire += rng.choice(bad_lines)
        if i % 4 == 0:
            row = nrng.normal(size=(1, 3)).astype(np.float32)
            valid.append(row)
            wire += encode_csv(row)
        if i % 997 == 0:  # an over-long line
            wire += b"9" * 5000 + b"\n"
    dec = CsvDecoder(("ax", "ay", "az"))
    rows = [dec.feed(c)[0] for c in _chunks(bytes(wire), nrng, 3000)]
    got = np.vstack(rows)
    np.testing.assert_array_equal(got, np.vstack(valid))
    fault_report.add("bad_input_malformed_csv", malformed=10_000 + 11, valid=len(valid),
                     recovered=len(got), bad_lines=dec.bad_lines)


garbage = st.binary(max_size=300).map(lambda b: b + b"\x00")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(garbage, st.integers(1, 40)), min_size=1, max_size=12),
       st.lists(st.integers(1, 500), max_size=20))
def test_frames_in_garbage_split_anywhere_are_all_recovered(pieces, cuts):
    wire, expect = b"", []
    for i, (junk, n) in enumerate(pieces):
        x = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + i
        wire += junk + encode_frame(i, i, x)
        expect.append(i)
    dec, got, pos = FrameDecoder(), [], 0
    for c in cuts + [len(wire)]:
        got += dec.feed(wire[pos:pos + c])
        pos += c
    got += dec.feed(wire[pos:])
    assert [f.seq for f in got if hasattr(f, "seq")] == expect


line_garbage = st.binary(max_size=120).map(
    lambda b: b.replace(b"\n", b"").replace(b"\r", b"") + b"\n")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(line_garbage, st.floats(-1e6, 1e6, width=32)), min_size=1,
                max_size=15), st.lists(st.integers(1, 80), max_size=20))
def test_csv_lines_in_garbage_split_anywhere_are_all_recovered(pieces, cuts):
    wire, expect = b"", []
    for junk, v in pieces:
        # garbage that happens to be a valid 3-number line (or a message) is not garbage
        stripped = junk.strip()
        try:
            parts = stripped.decode().split(",")
            looks_valid = len(parts) == 3 and all(math.isfinite(float(p)) or True for p in parts)
        except (UnicodeDecodeError, ValueError):
            looks_valid = False
        if looks_valid:
            continue
        row = np.array([[v, -v, 1.0]], np.float32)
        wire += junk + encode_csv(row)
        expect.append(row)
    dec, got, pos = CsvDecoder(("a", "b", "c")), [], 0
    for c in cuts + [len(wire)]:
        got.append(dec.feed(wire[pos:pos + c])[0])
        pos += c
    got.append(dec.feed(wire[pos:])[0])
    got_rows = np.vstack(got) if got else np.empty((0, 3))
    want = np.vstack(expect) if expect else np.empty((0, 3))
    np.testing.assert_array_equal(got_rows, want)


# ------------------------------------------------------------------ files of garbage
def test_register_map_files_of_garbage(tmp_path):
    from firmware_bridge.errors import ConfigError
    from firmware_bridge.modbus.regmap import load_map

    rng = np.random.default_rng(SEED)
    p = tmp_path / "map.toml"
    for i in range(200):
        p.write_bytes(rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
                      if i % 2 else b"[[points]]\nname = " + bytes(rng.integers(32, 127, 30,
                                                                           dtype=np.uint8)))
        with pytest.raises(ConfigError) as ei:
            load_map(p)
        assert "\n" not in str(ei.value) and str(ei.value).startswith(str(p))


def test_gateway_config_files_of_garbage(tmp_path):
    """Found by the atheris run (benchmarks/fuzz.py): a config with bytes that are not
    UTF-8 was a UnicodeDecodeError traceback; it must be a one-line error naming the file
    and the byte."""
    from sensorml.config import load_config
    from sensorml.errors import ConfigError
    from sensorml.examples import example_files

    rng = np.random.default_rng(SEED)
    p = tmp_path / "gateway.toml"
    base = example_files()["configs/serial_vibration.toml"].read_bytes()
    for i in range(200):
        if i % 2:
            data = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        else:  # a valid config with a few bytes overwritten, as a bad copy leaves it
            b = bytearray(base)
            for k in rng.integers(0, len(b), 4):
                b[k] = int(rng.integers(128, 256))
            data = bytes(b)
        p.write_bytes(data)
        with pytest.raises(ConfigError) as ei:
            load_config(p)
        assert "\n" not in str(ei.value) and str(ei.value).startswith(str(p))
    p.write_bytes(b"device_id = \"pump\xff\"\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 17\)"):
        load_config(p)
