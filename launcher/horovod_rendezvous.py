"""Horovod's own Gloo rendezvous, driven from the rank table instead of a host list.

The launcher of the server that holds rank 0 runs Horovod's rendezvous HTTP server (from
``horovod.runner``) on ``launch.port``; every rank gets the HOROVOD_* variables that horovodrun
would give it. Nothing here speaks Gloo itself.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from rank_table import RankTable


# What rank_env sets: who this rank is and where the rendezvous is. Inherited values of these are
# dropped by launcher.env; other HOROVOD_* variables (tuning: HOROVOD_FUSION_THRESHOLD,
# HOROVOD_CYCLE_TIME, ...) pass through to the ranks.
IDENTITY_KEYS = ("HOROVOD_HOSTNAME", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE",
                 "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE", "HOROVOD_GLOO_RENDEZVOUS_ADDR",
                 "HOROVOD_GLOO_RENDEZVOUS_PORT", "HOROVOD_CONTROLLER", "HOROVOD_CPU_OPERATIONS",
                 "HOROVOD_GLOO_IFACE", "HOROVOD_GLOO_TIMEOUT_SECONDS")


def cross_ranks(table: RankTable, server_index: int, local_rank: int) -> Tuple[int, int]:
    """Horovod's cross rank and size: among the servers that have a ``local_rank``-th device."""
    having = [i for i, s in enumerate(table.servers) if len(s.devices) > local_rank]
    return having.index(server_index), len(having)


def interface_of(address: str) -> str:
    """The network interface carrying ``address`` (Gloo wants an interface name)."""
    try:
        if ipaddress.ip_address(address).is_loopback:
            return "lo"
    except ValueError:
        pass  # a host name: look it up below
    import socket

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
             timeout_s: float) -> Dict[str, str]:
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
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": table.servers[0].server_id,
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


class Rendezvous:
    """Horovod's rendezvous server on a fixed port, for the lifetime of the launch (rank 0's server)."""

    def __init__(self, table: RankTable, port: int):
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        try:
            self._httpd = RendezvousHTTPServer(("", port), RendezvousHandler, 0)
        except OSError as e:
            raise OSError(f"cannot start Horovod's rendezvous on port {port} ({e.strerror}). "
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
