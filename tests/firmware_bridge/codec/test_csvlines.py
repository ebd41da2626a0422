"""CSV sample lines: headers, messages, CRLF, malformed lines, channel inference, and
property tests (never raises; any split of the stream gives the same result)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.codec.csvlines import MAX_LINE, CsvDecoder, encode_csv


def feed_all(dec: CsvDecoder, *parts: bytes):
    """Feed the parts in turn; all rows (float32) and messages."""
    rows, msgs = [], []
    for part in parts:
        r, m = dec.feed(part)
        if r.shape[0]:
            rows.append(r)
        msgs += m
    return (np.concatenate(rows) if rows else np.empty((0, dec.n_channels), np.float32)), msgs


def test_header_names_channels_and_hash_lines_are_messages():
    dec = CsvDecoder()
    rows, msgs = dec.feed(b"# channels: ax, ay ,az\n1,2,3\n#ack STOP\n\n4,5,6\n# note: warm\n")
    assert dec.channels == ("ax", "ay", "az")
    assert rows.dtype == np.float32 and rows.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert msgs == ["ack STOP", "note: warm"]
    assert dec.bad_lines == 0 and dec.lines == 2


def test_crlf_and_lines_split_across_feeds():
    dec = CsvDecoder()
    rows, _ = feed_all(dec, b"1.5,-2", b"e-3\r", b"\n3,4\r\n5,", b"6\r\n")
    np.testing.assert_array_equal(rows, np.array([[1.5, -2e-3], [3, 4], [5, 6]], np.float32))
    assert dec.bad_lines == 0


def test_malformed_lines_are_counted_and_skipped_never_raised():
    dec = CsvDecoder(["a", "b"])
    rows, msgs = dec.feed(b"1,2\n3\n4,5,6\nx,1\n1,,\n\xff\xfe,1\n7,8\n1 2,3\n")
    assert rows.tolist() == [[1, 2], [7, 8]]
    assert dec.bad_lines == 6 and msgs == []


def test_configured_channels_win_over_a_header_with_another_count():
    dec = CsvDecoder(("x", "y"))
    rows, _ = dec.feed(b"# channels: a,b,c\n1,2\n1,2,3\n")
    assert dec.channels == ("x", "y") and rows.tolist() == [[1, 2]]
    assert dec.header_mismatches == 1 and dec.bad_lines == 1


def test_channel_count_is_inferred_despite_a_cut_first_line():
    """A port opened mid-stream starts in the middle of a line."""
    dec = CsvDecoder()
    rows, _ = dec.feed(b"44\n0.1,0.2,0.3\n0.4,0.5,0.6\n0.7,0.8,0.9\n")
    assert dec.channels == ("ch0", "ch1", "ch2") and rows.shape == (3, 3)
    assert dec.bad_lines == 1


def test_a_wrong_guess_of_the_layout_is_relearned():
    dec = CsvDecoder()
    dec.feed(b"1,2\n")  # a single cut line decided ch=2 ...
    rows, _ = dec.feed(encode_csv(np.arange(30, dtype=np.float32).reshape(10, 3)))
    assert dec.channels == ("ch0", "ch1", "ch2") and rows.shape == (10, 3)


def test_over_long_line_is_dropped_without_growing_memory():
    dec = CsvDecoder(["a"])
    for _ in range(5):
        dec.feed(b"9" * 2000)
        assert len(dec._buf) <= MAX_LINE + 1
    rows, _ = dec.feed(b"9\n42\n")
    assert rows.tolist() == [[42.0]] and dec.bad_lines == 1


def test_encode_csv_round_trips_float32_exactly():
    x = np.random.default_rng(3).normal(scale=1e3, size=(2000, 3)).astype(np.float32)
    x[0] = [np.float32(1e-40), -0.0, np.float32(3.4e38)]
    dec = CsvDecoder()
    rows, _ = dec.feed(encode_csv(x, ["ax", "ay", "az"]))
    np.testing.assert_array_equal(rows, x)
    assert dec.channels == ("ax", "ay", "az")


# ---------------------------------------------------------------- properties

number = st.floats(width=32, allow_nan=False).map(lambda v: f"{v:.9g}")
row = st.lists(number, min_size=3, max_size=3).map(",".join)
line = st.one_of(
    row,
    row,
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
            max_size=30),  # noise (no lone surrogates: they cannot be UTF-8 encoded)
    st.just(""),
    st.just("#ack STOP"),
    st.lists(number, min_size=1, max_size=5).map(",".join),  # wrong field count
)
stream_st = st.tuples(st.lists(line, max_size=40), st.sampled_from(["\n", "\r\n"])).map(
    lambda t: ("# channels: ax,ay,az\n" + "".join(s + t[1] for s in t[0])).encode("utf-8")
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data):
    dec = CsvDecoder()
    rows, msgs = dec.feed(data)
    assert rows.ndim == 2 and rows.dtype == np.float32
    assert all(isinstance(m, str) for m in msgs)


@settings(max_examples=200, deadline=None)
@given(stream_st, st.lists(st.integers(0, 10_000), max_size=10))
def test_splitting_the_stream_anywhere_gives_the_same_result(stream, cuts):
    whole = CsvDecoder()
    expected_rows, expected_msgs = whole.feed(stream)
    dec = CsvDecoder()
    parts, prev = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        parts.append(stream[prev:cut])
        prev = cut
    rows, msgs = feed_all(dec, *parts)
    np.testing.assert_array_equal(rows.reshape(-1, 3), expected_rows)
    assert msgs == expected_msgs
    assert dec.counters() == whole.counters()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(width=32, allow_nan=False), min_size=2, max_size=2), max_size=50))
def test_encode_then_decode_is_exact(values):
    x = np.array(values, np.float32).reshape(-1, 2)
    rows, _ = CsvDecoder(["a", "b"]).feed(encode_csv(x))
    np.testing.assert_array_equal(rows, x)
