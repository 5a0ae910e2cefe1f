"""Building tables: one server from its device addresses, merging, and loopback tables."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .devices import MAX_DEVICE_ID as CHIP_MAX_DEVICE_ID
from .errors import RankTableError
from .model import RankTable, Server, SuperPod
from .parse import MAX_DEVICE_ID, parse, parse_with_rank_base

HCCS_GROUPS = (range(0, 4), range(4, 8))


def generate(
    server_id: str,
    device_ips: Mapping[int, str],
    device_ids: Optional[Sequence[int]] = None,
    first_rank: int = 0,
    address_file: str = "/etc/hccn.conf",
    chip: Optional[str] = "910A",
    visible_devices: Optional[Sequence[int]] = None,
) -> RankTable:
    """A version 1.0 table for one server, ranks ``first_rank..`` in ascending device order.

    hccl_tools.py's rules (mindspore-ai/models utils/hccl_tools/hccl_tools.py): devices in
    ascending order; on a 910A (Atlas 800, two HCCS rings of four) the devices lie within
    0-3 or within 4-7, or are all eight. With ``visible_devices`` (a container's
    ASCEND_VISIBLE_DEVICES) ``device_ids`` are logical ids, positions among the visible
    devices, and the table gets their physical ids. ``device_ids`` defaults to every device
    with an address (every visible one). With ``first_rank > 0`` the result is a fragment
    for :func:`merge`: HCCL (and ``parse``) want ranks 0..N-1 in a complete table.
    """
    if first_rank < 0:
        raise ValueError(f"first_rank must be >= 0, got {first_rank}")
    source = f"<generate for server {server_id}>"
    if visible_devices is not None:
        visible = sorted(visible_devices)
        logical = list(range(len(visible))) if device_ids is None else list(device_ids)
        outside = [i for i in logical if not 0 <= i < len(visible)]
        if outside:
            raise RankTableError(source, "$.server_list[0].device", f"logical device(s) {outside} but "
                                 f"{len(visible)} visible device(s) {visible}",
                                 f"with --visible-devices, --devices counts 0..{len(visible) - 1}")
        device_ids = [visible[i] for i in logical]
    ids = sorted(device_ips) if device_ids is None else sorted(device_ids)
    if not ids:
        raise RankTableError(source, "$.server_list[0].device", "no devices to list",
                             "configure device addresses (hccn.conf) or pass --devices")
    twice = sorted({d for d in ids if ids.count(d) > 1})
    if twice:
        raise RankTableError(source, "$.server_list[0].device", f"device_id {twice[0]} appears twice",
                             "list each device once")
    if chip is not None:
        _check_hccs_groups(ids, chip, source)
    devices = []
    for index, device_id in enumerate(ids):
        if device_id not in device_ips:
            known = ",".join(str(d) for d in sorted(device_ips)) or "none"
            raise RankTableError(
                source, f"$.server_list[0].device[{index}].device_ip",
                f"device {device_id} has no address (addresses known for devices: {known})",
                f"add address_{device_id}=<ip> to {address_file}, or choose --devices among "
                "the known ones",
            )
        devices.append({
            "device_id": str(device_id),
            "device_ip": device_ips[device_id],
            "rank_id": str(first_rank + index),
        })
    data = {
        "version": "1.0",
        "status": "completed",
        "server_count": "1",
        "server_list": [{"server_id": server_id, "host_nic_ip": "reserve", "device": devices}],
    }
    return parse_with_rank_base(data, source, rank_base=first_rank)


def _check_hccs_groups(ids: Sequence[int], chip: str, source: str) -> None:
    top = CHIP_MAX_DEVICE_ID[chip]
    if ids[-1] > top:
        raise RankTableError(source, "$.server_list[0].device", f"device {ids[-1]} does not exist on an "
                             f"Ascend {chip} server (devices 0..{top})", f"choose devices in 0..{top}")
    if chip == "910A" and len(set(ids)) != 8 and not any(set(ids) <= set(g) for g in HCCS_GROUPS):
        raise RankTableError(source, "$.server_list[0].device", f"devices {','.join(map(str, ids))} span "
                             "both HCCS rings of an Atlas 800 (0-3 and 4-7); HCCL links only devices of "
                             "one ring, or all eight", "choose devices within 0-3 or within 4-7, or all 8")


def merge(tables: Sequence[RankTable], names: Optional[Sequence[str]] = None) -> RankTable:
    """One cluster table from per-server tables, servers in the order given.

    Ranks are renumbered 0..N-1 across servers (each server keeps its device order).
    All inputs must share a version; a server_id in two inputs is an error. For version
    1.2, super pods with the same id are joined (servers in input order). ``names``
    (e.g. file paths) label the inputs in error messages.
    """
    source = "<merge>"
    labels = list(names) if names is not None else [f"input #{i + 1}" for i in range(len(tables))]
    if not tables:
        raise RankTableError(source, "$", "no tables to merge", "pass at least one rank table")
    versions = sorted({t.version for t in tables})
    if len(versions) > 1:
        listing = ", ".join(f"{label}: {t.version}" for label, t in zip(labels, tables))
        raise RankTableError(source, "$.version", f"inputs mix versions ({listing})",
                             "merge tables of one version only")
    servers: List[Server] = []
    owner: Dict[str, str] = {}
    pods: Dict[str, List[str]] = {}
    next_rank = 0
    for label, table in zip(labels, tables):
        for server in table.servers:
            if server.server_id in owner:
                raise RankTableError(
                    source, f"$.server_list[{len(servers)}].server_id",
                    f"server_id {server.server_id!r} is in {owner[server.server_id]} and in "
                    f"{label}",
                    "list each server in exactly one input table",
                )
            owner[server.server_id] = label
            devices = []
            for device in server.devices:
                devices.append(dataclasses.replace(device, rank_id=next_rank))
                next_rank += 1
            servers.append(dataclasses.replace(server, devices=tuple(devices)))
        for pod in table.super_pods:
            pods.setdefault(pod.super_pod_id, []).extend(pod.server_ids)
    merged = RankTable(
        version=versions[0],
        status="completed",
        servers=tuple(servers),
        super_pods=tuple(SuperPod(pid, tuple(ids)) for pid, ids in pods.items()),
    )
    return parse(merged.to_json(), source)


def local_table(n_ranks: int, n_servers: int = 1, first_ip: str = "127.0.0.1") -> RankTable:
    """A version 1.0 table for CPU ranks on loopback addresses.

    Server ``k`` is ``first_ip + k`` (``127.0.0.1``, ``127.0.0.2``, ...) and holds
    ``n_ranks / n_servers`` devices with ids 0.. and an empty ``device_ip``: CPU ranks have
    no device NIC, and HCCL wants device addresses unique (empty ones it accepts).
    Raises ``ValueError`` if the counts do not divide or are out of range.
    """
    if n_ranks < 1 or n_servers < 1:
        raise ValueError(f"need n_ranks >= 1 and n_servers >= 1, got {n_ranks} and {n_servers}")
    if n_ranks % n_servers:
        raise ValueError(f"{n_ranks} ranks do not divide evenly over {n_servers} servers; "
                         "choose a rank count that is a multiple of the server count")
    per_server = n_ranks // n_servers
    if per_server > MAX_DEVICE_ID + 1:
        raise ValueError(f"{per_server} ranks per server exceed the {MAX_DEVICE_ID + 1} device "
                         "ids a server may have; use more servers")
    try:
        base = ipaddress.IPv4Address(first_ip)
    except ValueError:
        raise ValueError(f"first_ip {first_ip!r} is not an IPv4 address") from None
    addresses = []
    for k in range(n_servers):
        try:
            addresses.append(str(base + k))
        except ipaddress.AddressValueError:
            raise ValueError(f"first_ip {first_ip} + {k} is past 255.255.255.255") from None
    return node_table([(address, per_server) for address in addresses],
                      f"<local_table({n_ranks}, {n_servers}, {first_ip!r})>")


def node_table(nodes: Sequence[Tuple[str, int]], source: str = "<nodes>") -> RankTable:
    """A version 1.0 table for CPU/GPU ranks: one server per (address, ranks) in node order, device
    ids 0.. (the local rank) and an empty ``device_ip``, ranks counted across the nodes in order (as
    torchrun's --node-rank numbers them)."""
    server_list, first = [], 0
    for address, count in nodes:
        server_list.append({"server_id": address, "device": [
            {"device_id": str(d), "device_ip": "", "rank_id": str(first + d)} for d in range(count)]})
        first += count
    data = {"version": "1.0", "status": "completed", "server_count": str(len(server_list)),
            "server_list": server_list}
    return parse(data, source)
