"""Two ttys joined like a null-modem cable, so a serial link (Modbus RTU, a sensor's
stream) runs end to end without hardware.

>>> import os
>>> with pty_link() as (a, b):
...     os.path.exists(a) and os.path.exists(b)
True
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import tty
from collections.abc import Iterator

__all__ = ["pty_link"]


@contextlib.contextmanager
def pty_link() -> Iterator[tuple[str, str]]:
    """Two ttys joined like a null-modem cable: ``(server_end, client_end)`` paths.

    Two ``pty.openpty()`` pairs, and a thread that copies bytes between their master
    sides, so each end is a real tty that pyserial (and pymodbus) open by name.
    """
    m1, s1 = pty.openpty()
    m2, s2 = pty.openpty()
    for fd in (s1, s2):
        tty.setraw(fd)
    wake_r, wake_w = os.pipe()

    def pump() -> None:
        while True:
            ready, _, _ = select.select([m1, m2, wake_r], [], [])
            if wake_r in ready:
                return
            for src, dst in ((m1, m2), (m2, m1)):
                if src in ready:
                    try:
                        data = os.read(src, 4096)
                    except OSError:  # the other side closed its end
                        continue
                    os.write(dst, data)

    thread = threading.Thread(target=pump, name="pty-link", daemon=True)
    thread.start()
    try:
        yield os.ttyname(s1), os.ttyname(s2)
    finally:
        os.write(wake_w, b"x")
        thread.join(2.0)
        for fd in (m1, s1, m2, s2, wake_r, wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
