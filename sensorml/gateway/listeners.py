"""The control server's listening sockets: the HTTP port, the remote-reset port and the
operators' unix socket (its mode and group are who may reset: SECURITY.md)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from sensorml.errors import SensormlError
from sensorml.gateway.client import unix_name

log = logging.getLogger("sensorml.gateway.control")


def tcp_listener(host: str, port: int, key: str) -> socket.socket:
    """A listening TCP socket on ``host:port``; a one-line error naming ``key`` if taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        s = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, IndexError) as e:
        raise SensormlError(f"{key}: cannot listen on {host}:{port} ({e})") from None
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(64)
    except OSError as e:
        s.close()
        raise SensormlError(
            f"{key}: cannot listen on {host}:{port} ({e.strerror or e}); "
            "is another gateway running? use another port or 0") from None
    os.set_inheritable(s.fileno(), False)
    return s


def socket_group(group: str) -> tuple[int, str]:
    """(gid, name) the control socket is given: ``group``, or by default
    ``sensorml-operators`` when it exists and this process may give files to it, else
    the process's own group. One-line error for a configured group that cannot be used."""
    import grp

    from sensorml.config import OPERATORS_GROUP

    def usable(gid: int) -> bool:
        return os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups()

    name = group or OPERATORS_GROUP
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        if group:
            raise SensormlError(f"control.group: no group {group!r} on this host") from None
        gid = -1
    if gid >= 0 and usable(gid):
        return gid, name
    if group:
        raise SensormlError(f"control.group: the gateway's user is not in group {group!r} "
                            f"(add SupplementaryGroups={group} to its unit)")
    own = os.getegid()
    try:
        own_name = grp.getgrgid(own).gr_name
    except KeyError:
        own_name = str(own)
    if gid >= 0:
        log.warning("group %s exists but the gateway's user is not in it: the control socket "
                    "goes to group %s (add SupplementaryGroups=%s to the unit)",
                    name, own_name, name)
    return own, own_name


def unix_listener(path: Path, gid: int) -> socket.socket:
    """A listening unix socket at ``path``, mode 0660, group ``gid``. Bound in a private
    (0700) folder beside it, then given its mode and group, then renamed into place: no
    moment exists in which anyone else could connect. A stale file from a crashed gateway
    is replaced; a live one (another gateway) is a one-line error."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with unix_name(path) as name:
                    probe.settimeout(0.5)
                    probe.connect(name)
                raise SensormlError(f"control.socket: another gateway listens on {path}")
            except OSError:
                pass  # stale: nobody answers
            finally:
                probe.close()
        private = Path(tempfile.mkdtemp(prefix=".control-", dir=path.parent))
    except OSError as e:
        raise SensormlError(f"control.socket: cannot create {path} ({e.strerror or e})") from None
    tmp = private / "s"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_name(tmp) as name:
            s.bind(name)
        os.chmod(tmp, 0o660)
        if os.stat(tmp).st_gid != gid:
            try:
                os.chown(tmp, -1, gid)
            except PermissionError as e:
                raise SensormlError(
                    f"control.group: cannot give {path} to group {gid} ({e.strerror}; the "
                    "unit's SystemCallFilter must allow @chown)") from None
        os.replace(tmp, path)
        s.listen(16)
    except OSError as e:
        s.close()
        raise SensormlError(f"control.socket: cannot listen on {path} ({e.strerror or e})") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
            private.rmdir()
        except OSError:
            pass
    os.set_inheritable(s.fileno(), False)
    return s
