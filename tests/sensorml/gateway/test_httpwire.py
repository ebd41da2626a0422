"""The control server's HTTP codec over byte literals: what it accepts, what it refuses
with which status, and that random bytes never raise anything but ``HttpError``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensorml.gateway.httpwire import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    parse_head,
    parse_response,
    render,
)


def refused(data: bytes) -> int:
    with pytest.raises(HttpError) as e:
        parse_head(data)
    return e.value.code


def test_a_complete_head_with_its_body_length():
    h = parse_head(b"POST /reset HTTP/1.0\r\nContent-Length: 12\r\nHost: [::1]:9108\r\n\r\n{}")
    assert (h.method, h.path, h.length, h.host) == ("POST", "/reset", 12, "[::1]")
    assert parse_head(b"GET /status?x=1 HTTP/1.1\nHost: LocalHost\n\n").path == "/status"
    assert parse_head(b"GET /status HTTP/1.1\nHost: LocalHost\n\n").host == "localhost"


@pytest.mark.parametrize("length", [b"-1", b"1e3", b"+5", b" ", b"0x10", b"\xd9\xa3",
                                    b"99999999999999999999999"])
def test_a_content_length_that_is_not_a_byte_count_is_400(length):
    assert refused(b"POST /r HTTP/1.0\r\nContent-Length: " + length + b"\r\n\r\n") == 400


def test_over_cap_lengths_heads_and_missing_lengths():
    assert refused(b"POST /r HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)) == 413
    assert refused(b"POST /r HTTP/1.0\r\nContent-Length: 1000000000000\r\n\r\n") == 413
    assert refused(b"POST /r HTTP/1.0\r\n\r\n") == 411
    assert refused(b"POST /r HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 501
    assert refused(b"GET / HTTP/1.0\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n") == 431
    assert refused(b"GET / HTTP/1.0\r\nX: " + b"a" * (MAX_HEAD + 1)) == 431  # no end yet
    assert parse_head(b"GET / HTTP/1.0\r\nX: " + b"a" * (MAX_HEAD - 40)) is None


@pytest.mark.parametrize("head", [
    b"GET /status\r\n\r\n", b"GET status HTTP/1.0\r\n\r\n", b"G(T / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/2\r\n\r\n", b"GET / HTTP/1.0\r\nno colon\r\n\r\n",
    b"GET / HTTP/1.0\r\n folded: x\r\n\r\n",
    b"POST / HTTP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"])
def test_malformed_heads_are_400(head):
    assert refused(head) == 400


def test_a_response_round_trips():
    assert parse_response(render(421, "application/json", b'{"a": 1}', {"X-A": "b"})) == (
        421, b'{"a": 1}')


@given(st.binary(max_size=2 * MAX_HEAD))
def test_random_bytes_never_raise_anything_but_http_error(data):
    try:
        parse_head(data)
    except HttpError as e:
        assert e.code in (400, 411, 413, 431, 501)
