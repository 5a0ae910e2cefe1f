"""Horovod's own Gloo rendezvous, driven from the rank table instead of a host list.

The launcher of the server that holds rank 0 runs Horovod's rendezvous HTTP server (from
``horovod.runner``) on ``launch.port``; every rank gets the HOROVOD_* variables that horovodrun
would give it. Nothing here speaks Gloo itself.

Exposure. horovodrun's own rendezvous binds ``('', port)`` (horovod/runner/util/network.py
``find_port``) and authenticates nothing: its HOROVOD_SECRET_KEY (runner/common/util/secret.py)
signs only the driver and task services (runner/common/util/network.py), never the key-value store
Gloo uses, and Gloo's C++ client (horovod/common/gloo/http_store.{h,cc}) sends bare GET/PUT/DELETE
requests to ``"http://" + HOROVOD_GLOO_RENDEZVOUS_ADDR + ":" + port + "/" + scope + "/" + key``,
with no header it could sign. So here the server binds the table's address for rank 0's server
(loopback for a loopback table), and a per-job secret rides in the one place the client copies
verbatim, the address: HOROVOD_GLOO_RENDEZVOUS_ADDR is ``host:port/SECRET``, every request path
then starts ``/SECRET:port/``, and a request without it gets 403. That keeps out whoever can reach
the port but not read a rank's environment; it is not encryption (docs/security.md).
"""

from __future__ import annotations

import hmac
import re
import secrets
import socket
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from launcher.errors import LaunchError
from launcher.netns import is_loopback
from rank_table import RankTable


# What rank_env sets: who this rank is and where the rendezvous is. Inherited values of these are
# dropped by launcher.env; other HOROVOD_* variables (tuning: HOROVOD_FUSION_THRESHOLD,
# HOROVOD_CYCLE_TIME, ...) pass through to the ranks.
IDENTITY_KEYS = ("HOROVOD_HOSTNAME", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE",
                 "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE", "HOROVOD_GLOO_RENDEZVOUS_ADDR",
                 "HOROVOD_GLOO_RENDEZVOUS_PORT", "HOROVOD_CONTROLLER", "HOROVOD_CPU_OPERATIONS",
                 "HOROVOD_GLOO_IFACE", "HOROVOD_GLOO_TIMEOUT_SECONDS")

# The secret every server of a multi-server job must be given alike (one launcher cannot tell the
# others); a job whose ranks all run under one launcher makes its own.
SECRET_ENV = "CSGM_RENDEZVOUS_SECRET"
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")


def rendezvous_secret(environ: Mapping[str, str], whole_job_here: bool) -> Optional[str]:
    """This job's rendezvous secret: CSGM_RENDEZVOUS_SECRET, else a fresh one when every rank runs
    under this launcher, else None (a multi-server job without one: unauthenticated)."""
    given = environ.get(SECRET_ENV)
    if given is not None:
        if not _SECRET.fullmatch(given):
            raise LaunchError(f"{SECRET_ENV}: expected 16 to 256 characters A-Z a-z 0-9 _ -, got "
                              f"{len(given)} characters; generate one with: python -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))'")
        return given
    return secrets.token_urlsafe(24) if whole_job_here else None


def rendezvous_address(host: str, port: int, secret: Optional[str]) -> str:
    """HOROVOD_GLOO_RENDEZVOUS_ADDR: the host, or ``host:port/SECRET`` (see the module docstring)."""
    return host if secret is None else f"{host}:{port}/{secret}"


def cross_ranks(table: RankTable, server_index: int, local_rank: int) -> Tuple[int, int]:
    """Horovod's cross rank and size: among the servers that have a ``local_rank``-th device."""
    having = [i for i, s in enumerate(table.servers) if len(s.devices) > local_rank]
    return having.index(server_index), len(having)


def interface_of(address: str) -> str:
    """The network interface carrying ``address`` (Gloo wants an interface name)."""
    if is_loopback(address):
        return "lo"
    import psutil  # installed with horovod

    try:
        wanted = socket.gethostbyname(address)
    except OSError:
        wanted = address
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == wanted for a in addresses):
            return name
    raise ValueError(f"no network interface of this host carries {address} (the rank table's "
                     "server_id); backend horovod needs it. Pass --server-id with this host's address")


def rank_env(table: RankTable, server_index: int, local_rank: int, rank: int, port: int,
             timeout_s: float, secret: Optional[str] = None) -> Dict[str, str]:
    server = table.servers[server_index]
    cross_rank, cross_size = cross_ranks(table, server_index, local_rank)
    return {
        "HOROVOD_HOSTNAME": server.server_id,
        "HOROVOD_RANK": str(rank),
        "HOROVOD_SIZE": str(table.world_size),
        "HOROVOD_LOCAL_RANK": str(local_rank),
        "HOROVOD_LOCAL_SIZE": str(len(server.devices)),
        "HOROVOD_CROSS_RANK": str(cross_rank),
        "HOROVOD_CROSS_SIZE": str(cross_size),
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": rendezvous_address(table.servers[0].server_id, port, secret),
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": interface_of(server.server_id),
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(int(timeout_s)),
    }


def host_alloc_plan(table: RankTable) -> List[object]:
    from horovod.runner.common.util.hosts import SlotInfo

    plan = []
    for index, server in enumerate(table.servers):
        for local, device in enumerate(server.devices):
            cross_rank, cross_size = cross_ranks(table, index, local)
            plan.append(SlotInfo(hostname=server.server_id, rank=device.rank_id, local_rank=local,
                                 cross_rank=cross_rank, size=table.world_size,
                                 local_size=len(server.devices), cross_size=cross_size))
    return plan


def _guarded(handler: type, secret: Optional[str], port: int) -> type:
    """Horovod's handler, answering only requests whose path starts ``/SECRET:port/`` (stripped
    before Horovod sees it); HEAD, which SimpleHTTPRequestHandler would answer from the launcher's
    working directory, never."""
    expected = f"{secret}:{port}".encode()

    class Guarded(handler):  # type: ignore[misc, valid-type]
        def _admit(self) -> bool:
            if secret is None:
                return True
            head, _, rest = self.path[1:].partition("/")
            if hmac.compare_digest(head.encode("utf-8", "replace"), expected):
                self.path = "/" + rest
                return True
            self.send_status_code(403)
            return False

        def do_GET(self) -> None:
            if self._admit():
                super().do_GET()

        def do_PUT(self) -> None:
            if self._admit():
                super().do_PUT()

        def do_DELETE(self) -> None:
            if self._admit():
                super().do_DELETE()

        def do_HEAD(self) -> None:
            self.send_status_code(405)

    return Guarded


class Rendezvous:
    """Horovod's rendezvous server on rank 0's server address and a fixed port, for the lifetime of
    the launch (rank 0's server), admitting only requests that carry ``secret`` (if any)."""

    def __init__(self, table: RankTable, port: int, secret: Optional[str] = None):
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        host = table.servers[0].server_id
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        except OSError as e:
            raise OSError(f"cannot start Horovod's rendezvous on {host}:{port} ({e}): the rank table's "
                          "first server must be an address of this host") from None
        server_class = type("RendezvousServer", (RendezvousHTTPServer,), {"address_family": family})
        try:
            self._httpd = server_class((host, port), _guarded(RendezvousHandler, secret, port), 0)
        except OSError as e:
            raise OSError(f"cannot start Horovod's rendezvous on {host}:{port} ({e.strerror}). "
                          "Set launch.port to a free port") from None
        self._httpd.init(host_alloc_plan(table))
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._httpd.serve_forever, name="horovod-rendezvous", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._thread = None


def needs_rendezvous(slots: Sequence[object]) -> bool:
    """The server whose launcher runs the rendezvous: the one holding rank 0."""
    return any(s.rank == 0 for s in slots)
