"""A network namespace of their own, holding only ``lo``, for the ranks of a loopback CPU job with
backend tf.

TensorFlow's gRPC server cannot be told which address to listen on: ``GrpcServer::Init``
(tensorflow/core/distributed_runtime/rpc/grpc_server_lib.cc, unchanged from TF 1.x to 2.18) calls
``builder.AddListeningPort(strings::StrCat("0.0.0.0:", requested_port), ...)``. The host part of
the task's address in the ``ServerDef`` (from TF_CONFIG or a cluster resolver) only names the
server to its peers (``host_name_``), ``ServerDef.port`` replaces only the port, and gRPC turns
``0.0.0.0`` into a dual-stack wildcard listener (grpc src/core/lib/iomgr/tcp_server_posix.cc,
``add_wildcard_addrs_to_server``: "Treat :: or 0.0.0.0 as a family-agnostic wildcard"). So every
rank's worker service, which runs any graph it is sent, would be open on every interface.

When every rank of a loopback table runs under this launcher, the ranks need no network but
loopback, so they get a namespace of their own: a holder process (``python -m launcher.netns``)
unshares one (as root, or inside a user namespace of its own where unprivileged user namespaces are
allowed), brings ``lo`` up and waits; each rank joins it with setns(2) before exec. Their ports
exist only there. Where neither is allowed (a container without CAP_SYS_ADMIN that blocks user
namespaces) the launcher says so and the ranks run as before (docs/security.md).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
import sys
from typing import List, Optional, Sequence

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_READY = "ready"


def is_loopback(address: str) -> bool:
    """A loopback address literal (127.0.0.0/8, ::1) or ``localhost``."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class NamespaceError(OSError):
    """This process may not make or join a network namespace."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(name: str, *args: int) -> None:
    if getattr(_libc(), name)(*args) != 0:
        errno = ctypes.get_errno()
        raise NamespaceError(errno, f"{name}: {os.strerror(errno)}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


def _unshare() -> bool:
    """Move this (single-threaded) process into a new network namespace; True if that took a user
    namespace too. The unprivileged way maps only this process's own uid and gid, to themselves."""
    try:
        _call("unshare", CLONE_NEWNET)
        return False
    except NamespaceError:
        pass
    uid, gid = os.getuid(), os.getgid()
    _call("unshare", CLONE_NEWUSER | CLONE_NEWNET)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:  # user_namespaces(7): setgroups before gid_map
            f.write(text)
    return True


def _hold() -> int:
    """The holder: make the namespace, say so on stdout, and live until stdin closes (the launcher
    closed it, or died: then PR_SET_PDEATHSIG ends this process too)."""
    import signal

    _libc().prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    try:
        user = _unshare()
        _loopback_up()
    except OSError as e:
        print(f"error: {e}", flush=True)
        return 1
    print(_READY + (" user" if user else ""), flush=True)
    sys.stdin.read()
    return 0


class PrivateNetwork:
    """A running holder; :meth:`paths` are the namespace files a rank joins, in order."""

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, "-m", "launcher.netns"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        assert self._proc.stdout is not None
        answer = self._proc.stdout.readline().strip()
        if not answer.startswith(_READY):
            self.close()
            raise NamespaceError(answer.replace("error: ", "", 1) or "the namespace holder exited")
        kinds = ["user", "net"] if answer.endswith(" user") else ["net"]
        self.paths: List[str] = [f"/proc/{self._proc.pid}/ns/{kind}" for kind in kinds]

    def close(self) -> None:
        if self._proc is not None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def join(paths: Sequence[str]) -> None:
    """In a child before exec: enter the namespaces (user first: it grants the right to join the
    network namespace it owns, setns(2))."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            _call("setns", fd, 0)
        finally:
            os.close(fd)


if __name__ == "__main__":
    sys.exit(_hold())
