"""Tests for launcher.slots: rank assignment and finding this server in the table."""

from __future__ import annotations

import socket
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from launcher.slots import (
    Slot,
    SlotError,
    assign_slots,
    identify_server,
    this_host_names,
)
from rank_table import RankTable, generate, local_table, merge, parse


def _table(servers: Sequence[Tuple[str, int]],
           extras: Optional[Dict[str, Dict[str, str]]] = None) -> RankTable:
    """A v1.0 table with the given (server_id, device count) in rank order.

    ``extras`` adds keys (host_ip, container_ip) to the named servers.
    """
    server_list = []
    rank = 0
    for k, (server_id, count) in enumerate(servers):
        entry: Dict[str, object] = {"server_id": server_id, "device": [
            {"device_id": str(d), "device_ip": f"192.168.{k}.{101 + d}", "rank_id": str(rank + d)}
            for d in range(count)]}
        entry.update((extras or {}).get(server_id, {}))
        server_list.append(entry)
        rank += count
    return parse({"version": "1.0", "status": "completed", "server_count": str(len(servers)),
                  "server_list": server_list})


ONE_BY_8 = _table([("10.0.0.1", 8)])
UNEVEN = _table([("10.0.0.1", 8), ("10.0.0.2", 4)])
LOOPBACK = local_table(4, 2, "127.0.0.2")


@pytest.mark.parametrize("table,server_id,count,expected", [
    (ONE_BY_8, "10.0.0.1", 8,
     [(r, r, 8, 8, 0, 1, r) for r in range(8)]),
    (LOOPBACK, "127.0.0.2", 2, [(0, 0, 4, 2, 0, 2, 0), (1, 1, 4, 2, 0, 2, 1)]),
    (LOOPBACK, "127.0.0.3", 2, [(2, 0, 4, 2, 1, 2, 0), (3, 1, 4, 2, 1, 2, 1)]),
    (UNEVEN, "10.0.0.1", 8, [(r, r, 12, 8, 0, 2, r) for r in range(8)]),
    (UNEVEN, "10.0.0.2", 4, [(8 + i, i, 12, 4, 1, 2, i) for i in range(4)]),
], ids=["1x8", "loopback-a", "loopback-b", "uneven-8", "uneven-4"])
def test_assign_slots(table: RankTable, server_id: str, count: int,
                      expected: List[Tuple[int, ...]]) -> None:
    slots = assign_slots(table, server_id, count)
    got = [(s.rank, s.local_rank, s.world_size, s.local_world_size, s.server_index,
            s.server_count, s.device_id) for s in slots]
    assert got == expected
    assert {s.server_id for s in slots} == {server_id}


def test_slot_fields_for_loopback() -> None:
    assert assign_slots(LOOPBACK, "127.0.0.3", 2)[1] == Slot(
        rank=3, local_rank=1, world_size=4, local_world_size=2, server_index=1, server_count=2,
        server_id="127.0.0.3", device_id=1, device_ip="")


def test_assign_slots_uses_physical_device_ids() -> None:
    ips = {d: f"192.168.1.{d}" for d in range(8)}
    table = merge([generate("a", ips, [0, 1, 2, 3]), generate("b", ips, [4, 5, 6, 7])])
    slots = assign_slots(table, "b", 4)
    assert [(s.rank, s.local_rank, s.device_id, s.device_ip) for s in slots] == [
        (4 + i, i, 4 + i, f"192.168.1.{4 + i}") for i in range(4)]


@pytest.mark.parametrize("table,server_id,count,pattern", [
    (ONE_BY_8, "10.0.0.1", 16,
     (r"devices\.count=16 but the rank table lists 8 device\(s\) for server '10\.0\.0\.1' .*; "
      r"set devices\.count=8, or fix the rank table so that server '10\.0\.0\.1' lists 16")),
    (UNEVEN, "10.0.0.2", 8,
     (r"devices\.count=8 but the rank table lists 4 device\(s\) for server '10\.0\.0\.2' "
      r"\(device ids 0, 1, 2, 3\); set devices\.count=4")),
    (LOOPBACK, "127.0.0.2", 1, r"devices\.count=1 but the rank table lists 2"),
    (ONE_BY_8, "10.0.0.1", 0, r"devices\.count must be >= 1, got 0"),
    (UNEVEN, "10.0.0.9", 4,
     (r"server '10\.0\.0\.9' is not in the rank table; known server ids: 10\.0\.0\.1, "
      r"10\.0\.0\.2; pass --server-id")),
], ids=["too-few-devices-in-table", "uneven-mismatch", "too-many-in-table", "zero", "unknown"])
def test_assign_slots_errors(table: RankTable, server_id: str, count: int, pattern: str) -> None:
    with pytest.raises(SlotError, match=pattern):
        assign_slots(table, server_id, count)
    assert issubclass(SlotError, ValueError)


# -- identify_server ----------------------------------------------------------------------

CLUSTER = _table([("node-a", 2), ("node-b", 2), ("10.0.0.3", 2)], {
    "node-a": {"host_ip": "10.0.0.1", "container_ip": "172.16.0.1"},
    "node-b": {"host_ip": "10.0.0.2"},
})


@pytest.mark.parametrize("explicit,environ,host_names,expected", [
    ("node-b", {"XDL_IP": "10.0.0.1"}, ["10.0.0.1"], "node-b"),
    (None, {"XDL_IP": "10.0.0.2"}, ["10.0.0.1"], "node-b"),
    (None, {"XDL_IP": "10.0.0.3"}, [], "10.0.0.3"),
    (None, {"XDL_IP": "10.9.9.9"}, ["host", "10.0.0.1"], "node-a"),
    (None, {}, ["myhost", "myhost.example", "127.0.0.1", "10.0.0.3"], "10.0.0.3"),
    (None, {"XDL_IP": ""}, ["node-b"], "node-b"),
    (None, {}, ["172.16.0.1"], "node-a"),
], ids=["explicit-wins", "xdl-host-ip", "xdl-server-id", "xdl-no-match-falls-back",
        "host-address", "host-name", "container-ip"])
def test_identify_server(explicit: Optional[str], environ: Dict[str, str],
                         host_names: List[str], expected: str) -> None:
    assert identify_server(CLUSTER, explicit, environ, host_names) == expected


@pytest.mark.parametrize("explicit,environ,host_names,pattern", [
    ("node-z", {}, [], (r"--server-id 'node-z' is not a server_id of the rank table; use one "
                        r"of: node-a, node-b, 10\.0\.0\.3")),
    (None, {}, ["other", "192.168.9.9"],
     (r"cannot tell which server of the rank table this host is: tried XDL_IP \(not set\); "
      r"this host's names \(other, 192\.168\.9\.9\) .*servers: node-a, node-b, 10\.0\.0\.3\); "
      r"pass --server-id")),
    (None, {"XDL_IP": "10.9.9.9"}, [],
     r"tried XDL_IP=10\.9\.9\.9; this host's names \(none found\)"),
    (None, {}, ["10.0.0.1", "10.0.0.2"],
     (r"this host's names \(10\.0\.0\.1, 10\.0\.0\.2\) matches several servers of the rank "
      r"table \(node-a, node-b\); pass --server-id")),
], ids=["explicit-unknown", "none", "xdl-and-none", "ambiguous"])
def test_identify_server_errors(explicit: Optional[str], environ: Dict[str, str],
                                host_names: List[str], pattern: str) -> None:
    with pytest.raises(SlotError, match=pattern):
        identify_server(CLUSTER, explicit, environ, host_names)


def test_identify_server_ambiguous_xdl_ip() -> None:
    table = _table([("a", 1), ("b", 1)], {"a": {"host_ip": "10.0.0.1"},
                                          "b": {"host_ip": "10.0.0.1"}})
    with pytest.raises(SlotError, match=r"XDL_IP=10\.0\.0\.1 matches several servers .*\(a, b\)"):
        identify_server(table, None, {"XDL_IP": "10.0.0.1"}, [])


def test_loopback_needs_explicit_server_id() -> None:
    with pytest.raises(SlotError, match=r"pass --server-id"):
        identify_server(LOOPBACK, None, {}, ["vm", "127.0.0.1"])
    assert identify_server(LOOPBACK, "127.0.0.3", {}, []) == "127.0.0.3"
    assert identify_server(local_table(2), None, {}, ["vm", "127.0.0.1"]) == "127.0.0.1"


def test_this_host_names_never_fails() -> None:
    names = this_host_names()
    assert isinstance(names, list) and all(isinstance(n, str) and n for n in names)
    assert len(names) == len(set(names))


def test_this_host_names_survives_broken_socket_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    for name in ("gethostname", "getfqdn", "getaddrinfo", "if_nameindex", "socket"):
        monkeypatch.setattr(socket, name, boom)
    assert this_host_names() == []
