"""SerialSource over a real pty (the test plays the device on the master end),
pyserial's ``loop://`` and a real TCP socket on 127.0.0.1 port 0."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import numpy as np
import pytest
import serial

from firmware_bridge.block import Quality
from firmware_bridge.codec.csvlines import encode_csv
from firmware_bridge.codec.frames import encode_frame, encode_message
from firmware_bridge.errors import ConfigError, PortError, TripError
from firmware_bridge.sources import open_source
from firmware_bridge.sources.serial import SerialSource
from firmware_bridge.sources.serialport import describe_open_error

FAST = {"reopen_backoff": (0.02, 0.2), "read_timeout": 0.05}


@pytest.fixture
def start_source(collector):
    """Start a SerialSource on a URL with the collector's callbacks; stopped at the end."""
    started: list[SerialSource] = []

    def start(url: str, wait_open: bool = True, **options) -> SerialSource:
        src = SerialSource(url, collector.on_block, collector.on_event, **{**FAST, **options})
        src.start()
        started.append(src)
        if wait_open:  # pyserial flushes the input on open: write only once it is open
            assert collector.wait(lambda c: src.is_open or "error" in c.kinds())
        return src

    yield start
    for src in started:
        src.stop()


def signal(n: int, ch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, ch)).astype(np.float32)


def test_csv_lines_through_a_pty_arrive_as_blocks_with_header_channel_names(
    pty_device, collector, start_source
):
    src = start_source(f"serial://{pty_device.path}?format=csv&baud=921600")
    x = signal(1000)
    pty_device.write(encode_csv(x, ["ax", "ay", "az"]))
    assert collector.wait(lambda c: c.n_rows() >= 1000)
    np.testing.assert_array_equal(collector.rows(), x)
    assert all(b.channels == ("ax", "ay", "az") for b in collector.blocks)
    assert src.channels == ("ax", "ay", "az")
    assert all(b.n <= 256 for b in collector.blocks)
    assert all(b.t_recv > 0 and b.meta["t0_clock"] == "host" for b in collector.blocks)
    stats = src.stats()
    assert stats["samples"] == 1000 and stats["bad_lines"] == 0


def test_binary_frames_through_a_pty_carry_device_time_and_sequence(
    pty_device, collector, start_source
):
    src = start_source(f"serial://{pty_device.path}?format=frames&channels=ax,ay,az")
    x = signal(20 * 64)
    rate = 25600.0
    for i in range(20):
        t0_us = 5_000_000 + round(i * 64 * 1e6 / rate)
        pty_device.write(encode_frame(100 + i, t0_us, x[i * 64 : (i + 1) * 64]))
    assert collector.wait(lambda c: c.n_rows() >= 20 * 64)
    np.testing.assert_array_equal(collector.rows(), x)
    blocks = collector.blocks
    assert [b.seq for b in blocks] == list(range(100, 120))
    assert blocks[0].t0 == pytest.approx(5.0) and blocks[0].meta["t0_clock"] == "device"
    assert all(b.quality == Quality.GOOD for b in blocks)
    assert blocks[-1].rate == pytest.approx(rate, rel=1e-3)
    assert src.stats()["frames"] == 20


def test_garbage_and_crc_errors_are_counted_and_valid_frames_recovered(
    pty_device, collector, start_source
):
    src = start_source(f"serial://{pty_device.path}?format=frames")
    x = signal(4 * 32, ch=2)
    good = [encode_frame(i, i * 1000, x[i * 32 : (i + 1) * 32]) for i in range(4)]
    corrupt = bytearray(good[1])
    corrupt[30] ^= 0x01 if corrupt[30] != 0x01 else 0x02  # a sample byte, not a delimiter
    pty_device.write(b"\x13\x37 line noise \xff\xfe\x00" + good[0] + bytes(corrupt)
                     + good[1] + b"junk\x00" + good[2] + good[3])
    assert collector.wait(lambda c: c.n_rows() >= 4 * 32)
    np.testing.assert_array_equal(collector.rows(), x)
    stats = src.stats()
    assert stats["crc_errors"] == 1
    assert stats["rejected_frames"] == 3
    assert stats["bytes_skipped"] > 0
    assert Quality.CRC in collector.blocks[0].quality  # garbage before it
    assert Quality.CRC in collector.blocks[1].quality  # the corrupt copy before it
    assert collector.blocks[3].quality == Quality.GOOD


def test_sequence_gap_is_counted_and_flags_the_block(pty_device, collector, start_source):
    src = start_source(f"serial://{pty_device.path}?format=frames")
    x = signal(8, ch=1)
    for seq in (0, 1, 2, 5, 6):
        pty_device.write(encode_frame(seq, seq * 8000, x))
    pty_device.write(encode_frame(9, 0, np.empty((0, 1), np.float32)))  # empty: no block
    pty_device.write(encode_frame(10, 10 * 8000, x))
    assert collector.wait(lambda c: len(c.blocks) >= 6)
    stats = src.stats()
    assert stats["gaps"] == 2 and stats["missed_frames"] == 4
    assert [Quality.GAP in b.quality for b in collector.blocks] == [False, False, False, True, False, True]
    assert [b.seq for b in collector.blocks] == [0, 1, 2, 5, 6, 10]


@pytest.mark.parametrize("fmt", ["csv", "frames"])
def test_send_command_waits_for_the_device_ack(fmt, pty_device, collector, start_source):
    src = start_source(f"serial://{pty_device.path}?format={fmt}")
    ack = b"#ack STOP\r\n" if fmt == "csv" else encode_message("ack STOP")
    seen: list[bytes] = []

    def device() -> None:
        got = pty_device.read_until(b"STOP\n")
        seen.append(got)
        if got:
            pty_device.write(ack)

    # the port must be open before we write: wait for the first block
    pty_device.write(encode_csv(signal(2)) if fmt == "csv" else encode_frame(0, 0, signal(2)))
    assert collector.wait(lambda c: c.n_rows() >= 2)
    thread = threading.Thread(target=device)
    thread.start()
    latency = src.send_command("STOP", timeout_s=5.0)
    thread.join()
    assert seen == [b"STOP\n"]
    assert 0 < latency < 5.0
    assert src.stats()["acks"] == 1


def test_send_command_without_ack_raises_trip_error(pty_device, collector, start_source):
    src = start_source(f"serial://{pty_device.path}?format=csv")
    pty_device.write(b"1,2\n")
    assert collector.wait(lambda c: c.n_rows() >= 1)
    pty_device.write(b"#ack RESET\n")  # an ack for another command does not count
    with pytest.raises(TripError, match=r"no ack for STOP within 0.2 s"):
        src.send_command("STOP", timeout_s=0.2)


def test_send_command_on_a_missing_port_raises_trip_error(tmp_path, collector, start_source):
    src = start_source(f"serial://{tmp_path / 'ttyNOPE'}?format=csv")
    assert collector.wait(lambda c: "error" in c.kinds())
    with pytest.raises(TripError, match="port is down"):
        src.send_command("STOP", timeout_s=1.0)


def _device_data(fmt: str, x: np.ndarray, seq: int) -> bytes:
    return encode_csv(x) if fmt == "csv" else encode_frame(seq, seq * 1000, x)


@pytest.mark.parametrize("fmt", ["csv", "frames"])
def test_port_unplugged_and_back_reports_outage_then_recovered(
    fmt, tmp_path, make_pty, collector, start_source
):
    """A symlink stands for /dev/serial/by-id/...: the device vanishes (both pty ends
    closed) and comes back as a new pty behind the same name."""
    link = tmp_path / "ttyDEVICE"
    first = make_pty()
    os.symlink(first.path, link)
    src = start_source(f"serial://{link}?format={fmt}&channels=ax,ay,az")
    first.write(_device_data(fmt, signal(10), seq=0))
    assert collector.wait(lambda c: c.n_rows() >= 10)

    first.close()
    assert collector.wait(lambda c: "outage" in c.kinds())
    assert not src.is_open
    second = make_pty()
    tmp_link = tmp_path / "ttyDEVICE.new"
    os.symlink(second.path, tmp_link)
    os.replace(tmp_link, link)
    assert collector.wait(lambda c: "recovered" in c.kinds())
    x = signal(10, seed=1)
    second.write(_device_data(fmt, x, seq=4))  # frames 1..3 were sent while unplugged
    assert collector.wait(lambda c: c.n_rows() >= 20)

    after = collector.blocks[-1] if fmt == "frames" else [b for b in collector.blocks if b.samples[0, 0] == x[0, 0]][0]
    assert Quality.RECOVERED in after.quality and Quality.GAP in after.quality
    np.testing.assert_array_equal(collector.rows()[10:], x)
    stats = src.stats()
    assert stats["outages"] == 1
    assert collector.kinds().index("outage") < collector.kinds().index("recovered")
    if fmt == "frames":
        assert stats["missed_frames"] == 3


def test_missing_port_is_one_line_port_error_naming_it(tmp_path, collector):
    path = tmp_path / "ttyUSB9"
    src = SerialSource(f"serial://{path}", collector.on_block, collector.on_event)
    with pytest.raises(PortError) as info:
        src.open_check()
    message = str(info.value)
    assert str(path) in message and "does not exist" in message and "\n" not in message
    strict = SerialSource(f"serial://{path}", collector.on_block, strict=True)
    with pytest.raises(PortError, match="ttyUSB9"):
        strict.start()


def test_unopenable_port_is_retried_with_backoff_not_spinning(tmp_path, collector, start_source):
    src = start_source(f"serial://{tmp_path / 'ttyGONE'}", reopen_backoff=(0.05, 0.1))
    # an observation window (not a wait for a condition): count attempts over 0.6 s
    threading.Event().wait(0.6)
    attempts = src.stats()["reopen_attempts"]
    assert 3 <= attempts <= 15  # 0.05, 0.1, 0.1, ... s apart: a retry loop, not a spin
    # one error event for a repeating error, not one per attempt
    assert collector.kinds().count("error") == 1


@pytest.mark.parametrize("fmt", ["csv", "frames"])
def test_loop_url_reads_back_what_is_written(fmt, collector, start_source):
    src = start_source(f"serial://loop://?format={fmt}&channels=a,b")
    x = signal(300, ch=2)
    src.write(encode_csv(x) if fmt == "csv" else encode_frame(1, 0, x))
    assert collector.wait(lambda c: c.n_rows() >= 300)
    np.testing.assert_array_equal(collector.rows(), x)
    assert collector.blocks[0].channels == ("a", "b")


def test_format_is_detected_and_socket_urls_work(collector, start_source):
    """A real TCP server on 127.0.0.1 port 0 plays a device behind a serial-over-IP box."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    x = signal(64)

    opened = threading.Event()

    def device() -> None:
        conn, _ = server.accept()
        with conn:
            opened.wait(5.0)  # pyserial drains the socket on open
            conn.sendall(b"".join(encode_frame(i, i, x[i * 16 : (i + 1) * 16]) for i in range(4)))
            conn.recv(1)  # hold the connection until the source closes it

    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    src = start_source(f"serial://socket://127.0.0.1:{port}")
    opened.set()
    assert collector.wait(lambda c: c.n_rows() >= 64)
    np.testing.assert_array_equal(collector.rows(), x)
    assert src.format == "frames"
    src.stop()
    server.close()


def test_open_source_dispatches_serial_urls_and_rejects_bad_options(collector):
    src = open_source("serial://loop://?format=csv&rate=100", collector.on_block)
    assert isinstance(src, SerialSource) and src.rate_fixed == 100.0
    with pytest.raises(ConfigError, match="unknown parameter 'buad'"):
        SerialSource("serial:///dev/ttyUSB0?buad=9600", collector.on_block)
    with pytest.raises(ConfigError, match="format='json'"):
        SerialSource("serial:///dev/ttyUSB0?format=json", collector.on_block)


def test_open_errors_name_the_fix():
    msg = describe_open_error("/dev/ttyUSB0", serial.SerialException(errno.EACCES, "could not open port"))
    assert msg.startswith("serial port /dev/ttyUSB0: permission denied") and "dialout" in msg
    msg = describe_open_error("/dev/ttyUSB0", serial.SerialException(errno.EAGAIN, "Could not exclusively lock port"))
    assert "busy" in msg


def test_frames_with_another_channel_count_than_configured_are_dropped_with_one_event(
    pty_device, collector, start_source
):
    src = start_source(f"serial://{pty_device.path}?format=frames&channels=ax,ay,az")
    pty_device.write(encode_frame(0, 0, signal(4, ch=2)) + encode_frame(1, 0, signal(4, ch=2))
                     + encode_frame(2, 0, signal(4, ch=3)))
    assert collector.wait(lambda c: c.n_rows() >= 4)
    assert src.stats()["shape_errors"] == 2
    assert [e.message for e in collector.events if e.kind == "error"] == [
        f"serial port {pty_device.path}: frame 0 has 2 channels, configured 3 (ax,ay,az); dropped"
    ]


def test_csv_format_is_detected_and_a_failing_consumer_does_not_stop_the_reader(pty_device, collector):
    calls: list[int] = []

    def on_block(block) -> None:
        calls.append(block.n)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")
        collector.on_block(block)

    src = SerialSource(f"serial://{pty_device.path}?rate=1000", on_block, collector.on_event, **FAST)
    src.start()
    try:
        assert collector.wait(lambda c: src.is_open)
        pty_device.write(b"1,2\n3,4\n5,6\n7,8\n")
        assert collector.wait(lambda c: "error" in c.kinds())
        pty_device.write(b"9,10\n")
        assert collector.wait(lambda c: c.n_rows() >= 1)
        assert src.format == "csv" and collector.blocks[-1].rate == 1000.0
        assert collector.blocks[-1].samples.tolist() == [[9.0, 10.0]]
    finally:
        src.stop()


def test_try_write_skips_rather_than_waits_when_the_line_is_full(pty_device, collector, start_source):
    """The heartbeat's write (``try_write``) must never hold the port while it blocks, or
    a STOP would wait behind it: with the pty's buffer full it returns False at once."""
    src = start_source(f"serial://{pty_device.path}?format=csv")
    pty_device.write(b"1,2\n")
    assert collector.wait(lambda c: c.n_rows() >= 1)
    filler = os.open(pty_device.path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        # the device reads nothing: fill the line's buffer until it stays full (the
        # kernel moves bytes on to the master's side a moment after a write is refused,
        # which reopens a little room, so one refusal is not yet a full line)
        full_since, give_up = None, time.monotonic() + 10.0
        while full_since is None or time.monotonic() - full_since < 0.3:
            assert time.monotonic() < give_up, "the pty's buffer never filled"
            try:
                os.write(filler, b"x" * 4096)
                full_since = None
            except BlockingIOError:
                full_since = full_since or time.monotonic()
                time.sleep(0.02)
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(src.try_write(b"HB 1\n")), daemon=True)
        t.start()
        t.join(5.0)
        assert result == [False], "try_write blocked on a full line"
        pty_device.read_until(b"\x00", timeout=0.5)  # the device drains the line
        assert src.try_write(b"HB 2\n") is True
        assert pty_device.read_until(b"HB 2\n").endswith(b"HB 2\n")
    finally:
        os.close(filler)
