"""Which ranks this server runs: a pure mapping from (rank table, server) to slots.

A *slot* is one worker process: its global rank, its index on this server and the
physical device it drives. Like horovod.runner's host-to-rank assignment, the mapping
is a pure function and is table-tested; finding out which server we are is separate
(:func:`identify_server`), and so is asking the OS for this host's names
(:func:`this_host_names`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, TypeVar

from csgm.cm_mode import CmCluster
from launcher.nodes import Nodes
from rank_table import RankTable, Server

T = TypeVar("T")

#: Environment variable the Ascend (MindX DL) container runtime sets to the host IP.
XDL_IP = "XDL_IP"


class SlotError(ValueError):
    """The rank table, the job spec and this host do not agree; the message says how."""


@dataclass(frozen=True)
class Slot:
    """One worker process on this server."""

    rank: int
    """Global rank (= rank_id in the table); becomes RANK_ID."""
    local_rank: int
    """Index on this server, 0..local_world_size-1."""
    world_size: int
    """Ranks in the whole table; becomes RANK_SIZE."""
    local_world_size: int
    """Ranks on this server."""
    server_index: int
    """Position of this server in the table (cross rank)."""
    server_count: int
    """Servers in the table (cross size)."""
    server_id: str
    """This server's id in the table."""
    device_id: int
    """Physical device id from the table (launcher.env maps it to the logical id a rank opens)."""
    device_ip: Optional[str]
    """The device NIC address from the table."""


@dataclass(frozen=True)
class Layout:
    """Where the ranks come from: a rank table, or HCCL's rank-table-free start (CM_*)."""

    table: Optional[RankTable]
    table_file: Optional[Path]
    cm: Optional[CmCluster] = None
    nodes: Optional[Nodes] = None  # the table came from the nodes' rendezvous (torchrun-style)

    @property
    def world_size(self) -> int:
        return self.cm.worker_size if self.cm is not None else self.table.world_size  # type: ignore[union-attr]

    @property
    def server_count(self) -> int:
        if self.cm is not None:
            return -(-self.cm.worker_size // (self.cm.local_worker or 1))
        return len(self.table.servers)  # type: ignore[union-attr]

    @property
    def source(self) -> str:
        if self.nodes is not None:
            return self.nodes.describe()
        return self.cm.describe() if self.cm is not None else f"rank table {self.table_file}"

    @property
    def master(self) -> str:
        return self.cm.chief_ip if self.cm is not None else self.table.servers[0].server_id  # type: ignore[union-attr]


def assign_slots(table: RankTable, server_id: str, devices_per_server: int) -> List[Slot]:
    """The slots of server ``server_id``, in rank order.

    ``devices_per_server`` is the job spec's ``devices.count``: the table's entry for
    this server must list exactly that many devices. Other servers may list a different
    number (uneven servers are allowed); the world size is the table's.
    """
    if devices_per_server < 1:
        raise SlotError(f"devices.count must be >= 1, got {devices_per_server}; set "
                        f"devices.count to the number of devices this server runs")
    index, server = _find(table, server_id)
    listed = len(server.devices)
    if listed != devices_per_server:
        raise SlotError(
            f"the job spec asks for devices.count={devices_per_server} but the rank table "
            f"lists {listed} device(s) for server {server_id!r} "
            f"(device ids {', '.join(str(d.device_id) for d in server.devices)}); "
            f"set devices.count={listed}, or fix the rank table so that server "
            f"{server_id!r} lists {devices_per_server} devices"
        )
    return [
        Slot(
            rank=device.rank_id,
            local_rank=local_rank,
            world_size=table.world_size,
            local_world_size=listed,
            server_index=index,
            server_count=len(table.servers),
            server_id=server.server_id,
            device_id=device.device_id,
            device_ip=device.device_ip,
        )
        for local_rank, device in enumerate(server.devices)
    ]


def cm_slots(cluster: CmCluster, devices_per_server: int, physical: Callable[[int], int]) -> List[Slot]:
    """The slots of this pod in the rank-table-free start: CM_LOCAL_WORKER ranks, the i-th opening
    logical device i (``physical`` maps it to a physical id) with rank CM_RANK * CM_LOCAL_WORKER + i,
    as MindX DL's without-ranktable train_start.sh counts them. HCCL assigns the real rank; the
    worker checks that it is this one (csgm.cm_mode.check_rank)."""
    local = cluster.local_worker
    assert local is not None and cluster.rank is not None, "csgm.cm_mode.detect(launcher=True) checked them"
    if local != devices_per_server:
        raise SlotError(f"the job spec asks for devices.count={devices_per_server} but CM_LOCAL_WORKER={local} "
                        f"(this pod's NPUs); set devices.count={local} (or -np {local})")
    return [
        Slot(rank=cluster.expected_rank(i), local_rank=i, world_size=cluster.worker_size, local_world_size=local,
             server_index=cluster.rank, server_count=-(-cluster.worker_size // local),
             server_id=cluster.worker_ip or f"CM_RANK {cluster.rank}", device_id=physical(i), device_ip=None)
        for i in range(local)
    ]


def identify_server(
    table: RankTable,
    explicit: Optional[str],
    environ: Mapping[str, str],
    host_names: Sequence[str],
) -> str:
    """The ``server_id`` of this host in ``table``.

    Tried in order: ``explicit`` (``--server-id``), which must be a server_id of the
    table; ``environ["XDL_IP"]`` (set by the Ascend container runtime to the host IP);
    then ``host_names`` (this host's names and addresses). A name matches a server when
    it equals its ``server_id``, ``host_ip`` or ``container_ip``. No match, or several
    servers matching, is a :class:`SlotError` that says what was tried.
    """
    known = ", ".join(table.server_ids)
    if explicit is not None:
        if explicit not in table.server_ids:
            raise SlotError(f"--server-id {explicit!r} is not a server_id of the rank table; "
                            f"use one of: {known}")
        return explicit

    tried: List[str] = []
    xdl_ip = environ.get(XDL_IP, "").strip()
    if xdl_ip:
        matches = _matching(table, [xdl_ip])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise _ambiguous(f"{XDL_IP}={xdl_ip}", matches)
        tried.append(f"{XDL_IP}={xdl_ip}")
    else:
        tried.append(f"{XDL_IP} (not set)")

    matches = _matching(table, host_names)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise _ambiguous(f"this host's names ({', '.join(host_names)})", matches)
    tried.append(f"this host's names ({', '.join(host_names) or 'none found'})")
    raise SlotError(
        f"cannot tell which server of the rank table this host is: tried {'; '.join(tried)} "
        f"against each server's server_id, host_ip and container_ip (servers: {known}); "
        f"pass --server-id with one of them"
    )


def _find(table: RankTable, server_id: str) -> Tuple[int, Server]:
    for index, server in enumerate(table.servers):
        if server.server_id == server_id:
            return index, server
    raise SlotError(f"server {server_id!r} is not in the rank table; known server ids: "
                    f"{', '.join(table.server_ids)}; pass --server-id with one of them "
                    f"or fix the rank table")


def _matching(table: RankTable, names: Sequence[str]) -> List[str]:
    wanted = {name.strip() for name in names if name and name.strip()}
    return [
        server.server_id
        for server in table.servers
        if wanted & {server.server_id, server.host_ip, server.container_ip}
    ]


def _ambiguous(what: str, matches: Sequence[str]) -> SlotError:
    return SlotError(f"{what} matches several servers of the rank table ({', '.join(matches)}); "
                     f"pass --server-id with the one this process should run")


def this_host_names() -> List[str]:
    """Hostname, FQDN and this host's IPv4 addresses; never raises.

    Addresses come from resolving the hostname, from each network interface (Linux
    ``SIOCGIFADDR``, like ``hostname -I`` plus loopback) and from the interface of the
    default route. Whatever cannot be found is left out.
    """
    names: List[str] = []

    def add(name: Optional[str]) -> None:
        if name and name not in names:
            names.append(name)

    hostname = _safe(socket.gethostname)
    add(hostname)
    fqdn = _safe(socket.getfqdn)
    add(fqdn)
    for host in (hostname, fqdn):
        if host:
            for address in _safe(lambda h=host: _resolve(h)) or []:
                add(address)
    for address in _safe(_interface_addresses) or []:
        add(address)
    add(_safe(_default_route_address))
    return names


def _safe(func: Callable[[], T]) -> Optional[T]:
    try:
        return func()
    except Exception:  # noqa: BLE001 -- this_host_names must never fail; skip the name
        return None


def _resolve(host: str) -> List[str]:
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _interface_addresses() -> List[str]:
    import fcntl  # POSIX only; _safe() turns ImportError into "nothing found"
    import struct

    siocgifaddr = 0x8915  # Linux
    found: List[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                request = struct.pack("256s", name.encode()[:15])
                reply = fcntl.ioctl(sock.fileno(), siocgifaddr, request)
            except OSError:
                continue  # interface without an IPv4 address
            found.append(socket.inet_ntoa(reply[20:24]))
    return found


def _default_route_address() -> str:
    # connect() on a UDP socket only picks a route and a source address: nothing is sent
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737)
        return str(sock.getsockname()[0])
