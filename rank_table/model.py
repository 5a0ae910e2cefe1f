"""Typed, immutable form of an HCCL rank table (template 1, versions 1.0 and 1.2).

These classes hold data only; :func:`rank_table.parse` is the one way to build a
validated table from JSON, and :meth:`RankTable.to_json` is its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

#: Extra keys (beyond the modelled fields) are kept as ``((key, value), ...)`` pairs,
#: in file order, so a table read and written again loses nothing HCCL may need.
Extras = Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class Device:
    """One NPU (or one CPU rank) in a server entry."""

    device_id: int
    """Physical device id on its server (0..15); HCCL key ``device_id``."""
    device_ip: Optional[str]
    """Address(es) of the device's RoCE NIC (hccn.conf / hccn_tool), as written: IPv4 or IPv6,
    comma-separated if several; "" or None (key absent) where HCCL allows it (one server)."""
    rank_id: int
    """Global rank of the process that drives this device."""
    super_device_id: Optional[int] = None
    """Device id inside its SuperPoD; version 1.2 tables only."""
    extras: Extras = ()
    """Documented optional HCCL keys not modelled above (device_port, host_port, ...)."""


@dataclass(frozen=True)
class Server:
    """One host (or one pod) and its devices."""

    server_id: str
    """Unique server name; usually the host IP but may be a hostname."""
    devices: Tuple[Device, ...]
    """Devices sorted by ``rank_id``."""
    host_ip: Optional[str] = None
    """Host address (ascend-operator), kept when present."""
    container_ip: Optional[str] = None
    """Pod address (ascend-operator), kept when present."""
    host_nic_ip: Optional[str] = None
    """Legacy field, usually ``"reserve"`` (hccl_tools)."""
    hardware_type: Optional[str] = None
    """Hardware type string (ascend-operator, MindIE jobs)."""


@dataclass(frozen=True)
class SuperPod:
    """A v1.2 SuperPoD: a group of servers sharing one high-speed fabric."""

    super_pod_id: str
    server_ids: Tuple[str, ...]


@dataclass(frozen=True)
class RankTable:
    """A complete rank table. A table returned by ``parse``/``load`` is always valid."""

    version: str
    """``"1.0"`` or ``"1.2"`` (SuperPoD)."""
    status: str
    """Always ``"completed"`` for a parsed table."""
    servers: Tuple[Server, ...]
    """Servers in rank order (ascending first rank)."""
    super_pods: Tuple[SuperPod, ...] = ()
    """Version 1.2 only."""

    @property
    def world_size(self) -> int:
        """Number of ranks (devices) in the whole table."""
        return sum(len(server.devices) for server in self.servers)

    @property
    def server_ids(self) -> Tuple[str, ...]:
        return tuple(server.server_id for server in self.servers)

    def to_json(self) -> Dict[str, Any]:
        """The HCCL JSON form (every value a string); ``parse(t.to_json()) == t``."""
        out: Dict[str, Any] = {
            "version": self.version,
            "status": self.status,
            "server_count": str(len(self.servers)),
            "server_list": [_server_json(server) for server in self.servers],
        }
        if self.super_pods:
            out["super_pod_list"] = [
                {
                    "super_pod_id": pod.super_pod_id,
                    "server_list": [{"server_id": sid} for sid in pod.server_ids],
                }
                for pod in self.super_pods
            ]
        return out


def _server_json(server: Server) -> Dict[str, Any]:
    out: Dict[str, Any] = {"server_id": server.server_id}
    for key in ("host_ip", "container_ip", "host_nic_ip", "hardware_type"):
        value = getattr(server, key)
        if value is not None:
            out[key] = value
    out["device"] = [_device_json(device) for device in server.devices]
    return out


def _device_json(device: Device) -> Dict[str, str]:
    out = {"device_id": str(device.device_id)}
    if device.device_ip is not None:
        out["device_ip"] = device.device_ip
    if device.super_device_id is not None:
        out["super_device_id"] = str(device.super_device_id)
    out["rank_id"] = str(device.rank_id)
    out.update(device.extras)
    return out


def describe(table: RankTable) -> List[str]:
    """Short human summary: one header line, then one line per server."""
    lines = [
        f"version {table.version}, {len(table.servers)} server(s), "
        f"world size {table.world_size}"
        + (f", {len(table.super_pods)} super pod(s)" if table.super_pods else "")
    ]
    for server in table.servers:
        ids = ",".join(str(d.device_id) for d in server.devices)
        first, last = server.devices[0].rank_id, server.devices[-1].rank_id
        lines.append(
            f"  server {server.server_id}: {len(server.devices)} device(s) [{ids}], "
            f"ranks {first}..{last}"
        )
    return lines
