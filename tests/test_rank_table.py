"""Tests for the rank_table package: parsing, validation, waiting, building, CLI."""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

import rank_table
from rank_table import (
    Device,
    RankTable,
    RankTableError,
    RankTableNotReady,
    Server,
    SuperPod,
    generate,
    load,
    local_table,
    merge,
    parse,
    parse_hccn_conf,
    parse_hccn_tool_ip,
    wait_until_completed,
    write,
)

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SOURCE = "t.json"


# -- fixtures as plain dicts ---------------------------------------------------------


def dev(device_id: int, rank: int, ip: Optional[str] = None, **extra: str) -> Dict[str, str]:
    out = {"device_id": str(device_id), "device_ip": f"192.168.{rank // 8}.{100 + rank}" if ip is None else ip,
           "rank_id": str(rank)}
    out.update(extra)
    return out


def v10_2x2() -> Dict[str, Any]:
    """Two servers of two devices; the second carries the ascend-operator extras."""
    return {
        "version": "1.0",
        "status": "completed",
        "server_count": "2",
        "server_list": [
            {"server_id": "10.0.0.1", "host_nic_ip": "reserve",
             "device": [dev(0, 0), dev(1, 1)]},
            {"server_id": "10.0.0.2", "host_ip": "10.0.0.2", "container_ip": "172.16.0.5",
             "hardware_type": "800I-A2", "device": [dev(0, 2), dev(1, 3)]},
        ],
    }


def v10_uneven() -> Dict[str, Any]:
    return {
        "version": "1.0", "status": "completed", "server_count": "2",
        "server_list": [
            {"server_id": "node-0", "device": [dev(d, d) for d in range(8)]},
            {"server_id": "node-1", "device": [dev(d, 8 + d) for d in range(4)]},
        ],
    }


def v12_pods() -> Dict[str, Any]:
    """Three servers in two super pods; super_device_ids repeat across pods."""
    def sdev(device_id: int, rank: int, sdid: int) -> Dict[str, str]:
        return dev(device_id, rank, super_device_id=str(sdid))

    return {
        "version": "1.2", "status": "completed", "server_count": "3",
        "server_list": [
            {"server_id": "node-0", "host_ip": "172.16.0.100",
             "device": [sdev(0, 0, 0), sdev(1, 1, 1)]},
            {"server_id": "node-1", "host_ip": "172.16.0.101",
             "device": [sdev(0, 2, 2), sdev(1, 3, 3)]},
            {"server_id": "node-2", "host_ip": "172.16.0.102",
             "device": [sdev(0, 4, 0), sdev(1, 5, 1)]},
        ],
        "super_pod_list": [
            {"super_pod_id": "0", "server_list": [{"server_id": "node-0"},
                                                  {"server_id": "node-1"}]},
            {"super_pod_id": "1", "server_list": [{"server_id": "node-2"}]},
        ],
    }


DELETE = object()


def edit(data: Any, path: str, value: Any) -> Any:
    """Set (or delete, with DELETE) the item at a dotted path like ``server_list.0.device``."""
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


def edited(factory: Callable[[], Dict[str, Any]], *changes: Any) -> Dict[str, Any]:
    data = factory()
    for path, value in changes:
        edit(data, path, value)
    return data


def all_strings(node: Any) -> bool:
    if isinstance(node, dict):
        return all(isinstance(k, str) and all_strings(v) for k, v in node.items())
    if isinstance(node, list):
        return all(all_strings(v) for v in node)
    return isinstance(node, str)


# -- parsing good tables -------------------------------------------------------------


def test_parse_v10_fields_and_extras() -> None:
    table = parse(v10_2x2(), SOURCE)
    assert table.version == "1.0" and table.status == "completed"
    assert table.world_size == 4
    assert table.super_pods == ()
    first, second = table.servers
    assert first == Server("10.0.0.1", (Device(0, "192.168.0.100", 0),
                                        Device(1, "192.168.0.101", 1)), host_nic_ip="reserve")
    assert (second.host_ip, second.container_ip, second.hardware_type) == (
        "10.0.0.2", "172.16.0.5", "800I-A2")
    assert [d.rank_id for d in second.devices] == [2, 3]


def test_parse_v12_super_pods() -> None:
    table = parse(v12_pods(), SOURCE)
    assert table.version == "1.2"
    assert table.super_pods == (SuperPod("0", ("node-0", "node-1")), SuperPod("1", ("node-2",)))
    assert [d.super_device_id for s in table.servers for d in s.devices] == [0, 1, 2, 3, 0, 1]


def test_devices_are_sorted_by_rank_and_device_extras_kept() -> None:
    data = v10_2x2()
    data["server_list"][0]["device"] = [
        dev(1, 1, device_port="16667"), dev(0, 0, device_port="16666", host_port="16665")]
    table = parse(data, SOURCE)
    devices = table.servers[0].devices
    assert [d.device_id for d in devices] == [0, 1]
    assert devices[0].extras == (("device_port", "16666"), ("host_port", "16665"))
    assert table.to_json()["server_list"][0]["device"][0]["host_port"] == "16665"


def test_empty_host_ip_from_ascend_operator_is_absent() -> None:
    table = parse(edited(v10_2x2, ("server_list.1.host_ip", "")), SOURCE)
    assert table.servers[1].host_ip is None


@pytest.mark.parametrize("factory", [v10_2x2, v10_uneven, v12_pods], ids=lambda f: f.__name__)
def test_to_json_round_trip(factory: Callable[[], Dict[str, Any]]) -> None:
    table = parse(factory(), SOURCE)
    out = table.to_json()
    assert all_strings(out)
    assert parse(json.loads(json.dumps(out)), SOURCE) == table
    assert out["server_count"] == str(len(table.servers))


@pytest.mark.parametrize("name,world,servers", [
    ("rank_table_8p.json", 8, ["10.0.0.1"]),
    ("rank_table_2x2_loopback.json", 4, ["127.0.0.2", "127.0.0.3"]),
])
def test_example_files(name: str, world: int, servers: List[str]) -> None:
    table = load(REPO / "configs" / name)
    assert table.world_size == world
    assert list(table.server_ids) == servers
    if name == "rank_table_8p.json":
        assert [d.device_ip for d in table.servers[0].devices] == [
            f"192.168.100.{101 + i}" for i in range(8)]
    else:
        assert all(d.device_ip == "" for s in table.servers for d in s.devices)  # CPU ranks: no NIC


def _one_server(*devices: Dict[str, str]) -> Dict[str, Any]:
    return {"version": "1.0", "status": "completed", "server_count": "1",
            "server_list": [{"server_id": "10.0.0.1", "device": list(devices)}]}


def _no_ip(device_id: int, rank: int) -> Dict[str, str]:
    return {"device_id": str(device_id), "rank_id": str(rank)}


@pytest.mark.parametrize("case, data", [
    # HCCL GetSingleDeviceIp: a single-server table may omit device_ip (warning only) ...
    ("no-device-ip-one-server", _one_server(_no_ip(0, 0), _no_ip(1, 1))),
    # ... or leave it empty ("'device_ip' is not set" warning), on one server or several.
    ("empty-device-ip", _one_server(dev(0, 0, ""), dev(1, 1, ""))),
    ("empty-device-ip-two-servers", edited(v10_2x2, *[(f"server_list.{s}.device.{d}.device_ip", "")
                                                      for s in (0, 1) for d in (0, 1)])),
    # several comma-separated addresses per device (SplitString on ","), IPv4 or IPv6 (ConvertIpAddress)
    ("several-device-ips", _one_server(dev(0, 0, "10.1.0.1,10.2.0.1"), dev(1, 1, "10.1.0.2,10.2.0.2"))),
    ("ipv6-device-ip", _one_server(dev(0, 0, "fe80::1"), dev(1, 1, "fe80::2"))),
    # GetServerList: no server_count is a warning; HCCL takes the list's length
    ("no-server-count", edited(v10_2x2, ("server_count", DELETE))),
    # GetSingleDevicePort: device_vnic_port is read (defaults to device_port)
    ("device-vnic-port", _one_server(dev(0, 0, device_port="16666", device_vnic_port="16667"))),
    # device_ip is read only when the server has no host_ip (NIC on the host)
    ("host-ip-no-device-ip", edited(v10_2x2, ("server_list.1.device.0.device_ip", DELETE),
                                    ("server_list.1.device.1.device_ip", DELETE))),
])
def test_tables_hccl_accepts(case: str, data: Dict[str, Any]) -> None:
    table = parse(data, SOURCE)
    assert parse(table.to_json(), SOURCE) == table  # written back as read


@pytest.mark.parametrize("chip, device_id, ok", [("910A", 7, True), ("910A", 8, False), ("910B", 15, True)])
def test_device_id_range_per_chip(chip: str, device_id: int, ok: bool) -> None:
    """HCCL GetSingleDevice: device_id > 7 is invalid except on 910B / A3 / 310P (> 15 there)."""
    from rank_table.devices import DeviceMapError, check_chip

    table = parse(_one_server(dev(device_id, 0)), SOURCE)
    if ok:
        check_chip(table, chip, SOURCE)
    else:
        with pytest.raises(DeviceMapError, match=rf"device_id 8: HCCL accepts device ids 0\.\.7 on an Ascend {chip}"):
            check_chip(table, chip, SOURCE)


def test_initializing_is_not_ready() -> None:
    data = {"status": "initializing", "server_list": [], "server_count": "", "version": "1.0"}
    pattern = r"^t\.json: \$\.status: status is \"initializing\""
    with pytest.raises(RankTableNotReady, match=pattern):
        parse(data, SOURCE)
    assert issubclass(RankTableNotReady, RankTableError)
    assert issubclass(RankTableError, ValueError)


# -- broken tables: every message names source, JSON path, problem and fix ------------

BROKEN = [
    ("not-object", list, r"\$: a rank table must be a JSON object, got an empty list"),
    ("no-status", lambda: edited(v10_2x2, ("status", DELETE)),
     r"\$\.status: the rank table has no 'status'; add \"status\""),
    ("bad-status", lambda: edited(v10_2x2, ("status", "done")),
     r"\$\.status: unknown status 'done'; use \"completed\""),
    ("no-version", lambda: edited(v10_2x2, ("version", DELETE)), r"\$\.version: .* no 'version'"),
    ("bad-version", lambda: edited(v10_2x2, ("version", "2.0")),
     r"\$\.version: unsupported version '2\.0'; use \"1\.0\""),
    ("count-int", lambda: edited(v10_2x2, ("server_count", 2)),
     (r"\$\.server_count: is the JSON number 2; HCCL reads every value as a string; "
      r"quote it: \"2\"")),
    ("count-mismatch", lambda: edited(v10_2x2, ("server_count", "3")),
     r"\$\.server_count: says 3 but server_list has 2 entries; set \"server_count\": \"2\""),
    ("servers-empty", lambda: edited(v10_2x2, ("server_list", []), ("server_count", "0")),
     r"\$\.server_list: is empty"),
    ("servers-not-list", lambda: edited(v10_2x2, ("server_list", {})),
     r"\$\.server_list: must be a JSON list"),
    ("server-not-object", lambda: edited(v10_2x2, ("server_list.1", "10.0.0.2")),
     r"\$\.server_list\[1\]: a server entry must be a JSON object, got a string"),
    ("no-server-id", lambda: edited(v10_2x2, ("server_list.1.server_id", DELETE)),
     r"\$\.server_list\[1\]\.server_id: the server entry has no 'server_id'"),
    ("empty-server-id", lambda: edited(v10_2x2, ("server_list.1.server_id", " ")),
     r"\$\.server_list\[1\]\.server_id: is empty"),
    ("no-devices", lambda: edited(v10_2x2, ("server_list.1.device", [])),
     r"\$\.server_list\[1\]\.device: must be a non-empty list, got an empty list"),
    ("device-id-range", lambda: edited(v10_2x2, ("server_list.0.device.1.device_id", "16")),
     r"\$\.server_list\[0\]\.device\[1\]\.device_id: 16 is outside 0\.\.15"),
    ("device-id-text", lambda: edited(v10_2x2, ("server_list.0.device.1.device_id", "one")),
     r"\$\.server_list\[0\]\.device\[1\]\.device_id: 'one' is not a non-negative integer"),
    ("device-id-negative", lambda: edited(v10_2x2, ("server_list.0.device.1.device_id", "-1")),
     r"\$\.server_list\[0\]\.device\[1\]\.device_id: '-1' is not a non-negative integer"),
    ("device-id-int", lambda: edited(v10_2x2, ("server_list.0.device.0.device_id", 0)),
     r"\$\.server_list\[0\]\.device\[0\]\.device_id: is the JSON number 0; .*quote it: \"0\""),
    ("device-id-dup", lambda: edited(v10_2x2, ("server_list.1.device.1.device_id", "0")),
     (r"\$\.server_list\[1\]\.device\[1\]\.device_id: device_id 0 appears twice on server "
      r"'10\.0\.0\.2' \(also at \$\.server_list\[1\]\.device\[0\]\)")),
    ("device-ip-short", lambda: edited(v10_2x2, ("server_list.0.device.0.device_ip", "192.168.1")),
     (r"\$\.server_list\[0\]\.device\[0\]\.device_ip: '192\.168\.1' is not an IP address; "
      r".*hccn")),
    # HCCL: device_ip required when the table has several servers (GetSingleDeviceIp).
    ("no-device-ip", lambda: edited(v10_2x2, ("server_list.0.device.0.device_ip", DELETE)),
     r"\$\.server_list\[0\]\.device\[0\]\.device_ip: the device entry has no 'device_ip'; HCCL"),
    # HCCL: every device address unique in the table (CheckUniqueAndInsertPool DEVICE_IP).
    ("device-ip-dup", lambda: edited(v10_2x2, ("server_list.0.device.1.device_ip", "192.168.0.100")),
     r"\$\.server_list\[0\]\.device\[1\]\.device_ip: device_ip 192\.168\.0\.100 is also at "
     r"\$\.server_list\[0\]\.device\[0\]\.device_ip; HCCL needs every device address to be unique"),
    # HCCL: the same number of addresses on every device (GetDeviceList).
    ("device-ip-count", lambda: edited(v10_2x2, ("server_list.0.device.1.device_ip", "10.1.0.1,10.1.0.2")),
     r"\$\.server_list\[0\]\.device\[1\]\.device_ip: has 2 address\(es\) but "
     r"\$\.server_list\[0\]\.device\[0\]\.device_ip has 1"),
    ("rank-int", lambda: edited(v10_2x2, ("server_list.1.device.0.rank_id", 2)),
     r"\$\.server_list\[1\]\.device\[0\]\.rank_id: is the JSON number 2; .*quote it: \"2\""),
    ("rank-bool", lambda: edited(v10_2x2, ("server_list.1.device.0.rank_id", True)),
     r"\$\.server_list\[1\]\.device\[0\]\.rank_id: is the JSON boolean true"),
    ("rank-dup", lambda: edited(v10_2x2, ("server_list.1.device.0.rank_id", "1")),
     (r"\$\.server_list\[1\]\.device\[0\]\.rank_id: rank_id 1 is used twice \(also at "
      r"\$\.server_list\[0\]\.device\[1\]\.rank_id\)")),
    ("rank-gap", lambda: edited(v10_2x2, ("server_list.1.device.1.rank_id", "5")),
     (r"\$\.server_list\[1\]\.device\[1\]\.rank_id: rank_id 5 is outside 0\.\.3 \(the table has "
      r"4 devices; rank 3 is missing\); number the ranks 0\.\.3 without gaps")),
    ("rank-base-1", lambda: {**v10_2x2(), "server_list": [
        {"server_id": "a", "device": [dev(0, 1), dev(1, 2)]},
        {"server_id": "b", "device": [dev(0, 3), dev(1, 4)]}]},
     (r"\$\.server_list\[1\]\.device\[1\]\.rank_id: rank_id 4 is outside 0\.\.3 .*rank 0 is "
      r"missing.*python -m rank_table merge")),
    ("server-ranks-split", lambda: edited(v10_2x2, ("server_list.0.device.1.rank_id", "2"),
                                          ("server_list.1.device.0.rank_id", "1")),
     (r"\$\.server_list\[0\]\.device: server '10\.0\.0\.1' holds ranks 0 and 2 but not 1; "
      r"each server must hold one contiguous block")),
    ("servers-out-of-order", lambda: {**v10_2x2(),
                                      "server_list": v10_2x2()["server_list"][::-1]},
     (r"\$\.server_list\[1\]: server '10\.0\.0\.1' \(ranks 0\.\.1\) comes after server "
      r"'10\.0\.0\.2' \(ranks 2\.\.3\); list servers in rank order")),
    ("server-id-dup", lambda: edited(v10_2x2, ("server_list.1.server_id", "10.0.0.1")),
     (r"\$\.server_list\[1\]\.server_id: duplicate server_id '10\.0\.0\.1' \(also at "
      r"\$\.server_list\[0\]\.server_id\)")),
    ("host-ip", lambda: edited(v10_2x2, ("server_list.1.host_ip", "10.0.0.300")),
     r"\$\.server_list\[1\]\.host_ip: '10\.0\.0\.300' is not an IP address"),
    ("container-ip", lambda: edited(v10_2x2, ("server_list.1.container_ip", "pod-a")),
     r"\$\.server_list\[1\]\.container_ip: 'pod-a' is not an IP address"),
    ("unknown-top", lambda: edited(v10_2x2, ("servers", [])),
     (r"\$\.servers: unknown key 'servers' in the rank table; remove it or fix its spelling; "
      r"allowed keys here: server_count, server_list, status, super_pod_list, version")),
    ("unknown-server-key", lambda: edited(v10_2x2, ("server_list.0.pod_name", "p0")),
     r"\$\.server_list\[0\]\.pod_name: unknown key 'pod_name' in a server entry"),
    ("unknown-device-key", lambda: edited(v10_2x2, ("server_list.0.device.0.rank", "0")),
     r"\$\.server_list\[0\]\.device\[0\]\.rank: unknown key 'rank' in a device entry"),
    ("device-extra-int", lambda: edited(v10_2x2, ("server_list.0.device.0.device_port", 16666)),
     r"\$\.server_list\[0\]\.device\[0\]\.device_port: is the JSON number 16666"),
    ("template-2", lambda: {"status": "completed", "group_count": "1", "group_list": []},
     r"\$\.group_list: this is the legacy template-2 layout"),
    ("clusterd-global", lambda: {"status": "completed", "version": "1.0",
                                 "server_group_list": []},
     r"\$\.server_group_list: this is a ClusterD global-ranktable"),
    ("v10-super-device", lambda: edited(v10_2x2, ("server_list.0.device.0.super_device_id", "0")),
     (r"\$\.server_list\[0\]\.device\[0\]\.super_device_id: super_device_id is only valid in "
      r"version 1\.2")),
    ("v10-super-pods", lambda: edited(v10_2x2, ("super_pod_list", [])),
     r"\$\.super_pod_list: super_pod_list is only valid in version 1\.2 tables"),
    ("v12-no-super-device", lambda: edited(v12_pods, ("server_list.2.device.1.super_device_id",
                                                      DELETE)),
     (r"\$\.server_list\[2\]\.device\[1\]\.super_device_id: a version 1\.2 device has no "
      r"super_device_id")),
    ("v12-super-device-text", lambda: edited(v12_pods, ("server_list.0.device.0.super_device_id",
                                                        "x")),
     r"\$\.server_list\[0\]\.device\[0\]\.super_device_id: 'x' is not a non-negative integer"),
    ("v12-no-pods", lambda: edited(v12_pods, ("super_pod_list", DELETE)),
     r"\$\.super_pod_list: a version 1\.2 table has no super_pod_list"),
    ("v12-pods-empty", lambda: edited(v12_pods, ("super_pod_list", [])),
     r"\$\.super_pod_list: must be a non-empty list"),
    ("v12-pod-unknown-server", lambda: edited(v12_pods, (
        "super_pod_list.1.server_list.0.server_id", "node-9")),
     (r"\$\.super_pod_list\[1\]\.server_list\[0\]\.server_id: server_id 'node-9' is not in "
      r"\$\.server_list; use one of node-0, node-1, node-2")),
    ("v12-pod-server-twice", lambda: edited(v12_pods, (
        "super_pod_list.1.server_list", [{"server_id": "node-2"}, {"server_id": "node-1"}])),
     r"\$\.super_pod_list\[1\]\.server_list\[1\]\.server_id: server 'node-1' is listed twice"),
    ("v12-server-in-no-pod", lambda: edited(v12_pods, ("super_pod_list.1", DELETE)),
     r"\$\.super_pod_list: server\(s\) 'node-2' are in no super pod"),
    ("v12-pod-id-dup", lambda: edited(v12_pods, ("super_pod_list.1.super_pod_id", "0")),
     r"\$\.super_pod_list\[1\]\.super_pod_id: duplicate super_pod_id '0'"),
    ("v12-super-device-dup", lambda: edited(v12_pods, (
        "server_list.1.device.0.super_device_id", "0")),
     (r"\$\.super_pod_list: super_device_id 0 is used by server 'node-0' device 0 and by server "
      r"'node-1' device 0, both in super pod '0'; super_device_id must be unique within a "
      r"super pod")),
    ("v12-pod-unknown-key", lambda: edited(v12_pods, ("super_pod_list.0.name", "a")),
     r"\$\.super_pod_list\[0\]\.name: unknown key 'name' in a super pod entry"),
]


@pytest.mark.parametrize("factory,pattern", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_tables(factory: Callable[[], Any], pattern: str) -> None:
    with pytest.raises(RankTableError, match="^" + re.escape(SOURCE + ": ") + pattern) as info:
        parse(factory(), SOURCE)
    assert not isinstance(info.value, RankTableNotReady)
    assert "; " in str(info.value)  # problem; fix
    assert info.value.source == SOURCE and info.value.path.startswith("$")


def test_error_is_picklable() -> None:
    err = RankTableError("f.json", "$.x", "bad", "fix it")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == "f.json: $.x: bad; fix it" and again.fix == "fix it"


# -- files: load and write ------------------------------------------------------------


def test_load_reports_json_syntax_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text('{\n  "status": "completed",\n  "version": "1.0"\n  "x": 1\n}\n')
    with pytest.raises(RankTableError, match=re.escape(f"{path}: $ (line 4, column 3): not valid "
                                                       "JSON: Expecting ',' delimiter; fix")):
        load(path)


@pytest.mark.parametrize("kind,pattern", [
    ("missing", r"\$: file not found; check the path"),
    ("directory", r"\$: is a directory, not a file"),
    ("binary", r"\$: not UTF-8 text"),
])
def test_load_file_problems(tmp_path: Path, kind: str, pattern: str) -> None:
    path = tmp_path / "hccl.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(RankTableError, match="^" + re.escape(f"{path}: ") + pattern):
        load(path)


def test_load_names_the_file_in_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(edited(v10_2x2, ("server_count", "7"))))
    with pytest.raises(RankTableError, match="^" + re.escape(f"{path}: $.server_count: says 7")):
        load(str(path))


def test_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    table = parse(v12_pods(), SOURCE)
    path = tmp_path / "hccl.json"
    path.write_text("old")
    write(table, path)
    assert load(path) == table
    assert os.listdir(tmp_path) == ["hccl.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == table.to_json()


def test_write_failure_leaves_target_and_no_temp(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hccl.json"
    path.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write(local_table(2), path)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["hccl.json"]


# -- waiting ----------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when ``sleep`` is called; runs scheduled events."""

    def __init__(self, events: Optional[Dict[float, Callable[[], None]]] = None) -> None:
        self.now = 100.0
        self.start = self.now
        self.sleeps: List[float] = []
        self.events = dict(events or {})
        self.reports: List[str] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for at in sorted(self.events):
            if self.now - self.start >= at:
                self.events.pop(at)()

    def wait(self, path: Path, **kwargs: Any) -> RankTable:
        return wait_until_completed(path, report=self.reports.append, clock=self.clock,
                                    sleep=self.sleep, **kwargs)


INITIALIZING = {"status": "initializing", "version": "1.0", "server_count": "",
                "server_list": []}


def test_wait_initializing_then_completed(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(INITIALIZING))
    fake = FakeTime({10: lambda: path.write_text(json.dumps(v10_2x2()))})
    table = fake.wait(path)
    assert table.world_size == 4
    assert fake.sleeps == [5.0, 5.0]
    assert fake.reports == [
        f"waiting for rank table {path}: status is \"initializing\"; 0 s of 300 s so far",
        f"waiting for rank table {path}: status is \"initializing\"; 5 s of 300 s so far",
    ]


def test_wait_missing_then_half_written_then_complete(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    text = json.dumps(v10_2x2())
    fake = FakeTime({
        5: lambda: path.write_text(text[: len(text) // 2]),
        10: lambda: path.write_text(text),
    })
    assert fake.wait(path, poll_s=5.0) == parse(v10_2x2())
    assert "the file does not exist yet" in fake.reports[0]
    assert "the file is not valid JSON yet" in fake.reports[1]
    assert len(fake.reports) == 2


def test_wait_times_out_with_last_state_and_how_to_wait_longer(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(INITIALIZING))
    fake = FakeTime()
    pattern = (re.escape(f"{path}: $.status: no completed rank table after 12 s (timeout 12 s); "
                         "last seen: status is \"initializing\"; ")
               + r".*raise the timeout \(--timeout SECONDS")
    with pytest.raises(RankTableError, match=pattern):
        fake.wait(path, timeout_s=12.0, poll_s=5.0)
    assert fake.sleeps == [5.0, 5.0, 2.0]
    assert len(fake.reports) == 3


def test_wait_times_out_on_missing_file(tmp_path: Path) -> None:
    fake = FakeTime()
    with pytest.raises(RankTableError, match=r"last seen: the file does not exist yet"):
        fake.wait(tmp_path / "nope.json", timeout_s=1.0, poll_s=5.0)
    assert fake.sleeps == [1.0]


def test_wait_fails_at_once_on_completed_but_invalid(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(edited(v10_2x2, ("server_list.0.device.0.rank_id", "9"))))
    fake = FakeTime()
    with pytest.raises(RankTableError, match=r"\.rank_id: rank_id 9 is outside 0\.\.3"):
        fake.wait(path)
    assert fake.sleeps == [] and fake.reports == []


def test_wait_returns_at_once_when_ready(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    write(local_table(2), path)
    fake = FakeTime()
    assert fake.wait(path).world_size == 2
    assert fake.sleeps == []


# -- hccn.conf / hccn_tool / generate ---------------------------------------------------

HCCN_CONF = """\
# written by hccn_tool
address_0=192.168.100.101
netmask_0=255.255.255.0
netdetect_0=192.168.100.1
 address_1 = 192.168.100.102

address_3=192.168.100.104
arp_0=x
"""


def test_parse_hccn_conf() -> None:
    assert parse_hccn_conf(HCCN_CONF) == {0: "192.168.100.101", 1: "192.168.100.102",
                                          3: "192.168.100.104"}
    assert parse_hccn_conf("") == {}


@pytest.mark.parametrize("text,pattern", [
    ("address_0=192.168.100.300\n", (r"^/etc/hccn\.conf: line 1: address_0 '192\.168\.100\.300' "
                                    r"is not an IPv4 address")),
    ("address_0=1.1.1.1\naddress_0=1.1.1.2\n",
     r"line 2: address_0 is set twice \(also on line 1\)"),
    ("address_16=1.1.1.1\n", r"line 1: device id 16 is outside 0\.\.15"),
])
def test_parse_hccn_conf_errors(text: str, pattern: str) -> None:
    with pytest.raises(RankTableError, match=pattern):
        parse_hccn_conf(text)


@pytest.mark.parametrize("text,ip", [
    ("ipaddr:192.168.100.101\nnetmask:255.255.255.0\n", "192.168.100.101"),
    ("netmask:255.255.255.0\nipaddr: 10.1.2.3 \n", "10.1.2.3"),
])
def test_parse_hccn_tool_ip(text: str, ip: str) -> None:
    assert parse_hccn_tool_ip(text) == ip


@pytest.mark.parametrize("text,pattern", [
    ("netmask:255.255.255.0\n", r"ipaddr: no 'ipaddr:<address>' line in the output"),
    ("ipaddr:999.1.1.1\n", r"line 1: ipaddr '999\.1\.1\.1' is not an IPv4 address"),
])
def test_parse_hccn_tool_ip_errors(text: str, pattern: str) -> None:
    with pytest.raises(RankTableError, match=pattern):
        parse_hccn_tool_ip(text)


def test_generate_from_hccn_conf() -> None:
    table = generate("10.0.0.1", parse_hccn_conf(HCCN_CONF))
    assert table.version == "1.0" and table.server_ids == ("10.0.0.1",)
    (server,) = table.servers
    assert server.host_nic_ip == "reserve"
    assert [(d.device_id, d.device_ip, d.rank_id) for d in server.devices] == [
        (0, "192.168.100.101", 0), (1, "192.168.100.102", 1), (3, "192.168.100.104", 2)]
    assert parse(table.to_json()) == table


def test_generate_subset_and_fragment() -> None:
    ips = {d: f"192.168.100.{101 + d}" for d in range(8)}
    table = generate("node-1", ips, device_ids=[4, 5, 6, 7], first_rank=4)
    assert [(d.device_id, d.rank_id) for d in table.servers[0].devices] == [
        (4, 4), (5, 5), (6, 6), (7, 7)]
    with pytest.raises(RankTableError, match=r"rank 0 is missing.*rank_table merge"):
        parse(table.to_json(), "frag.json")


def test_generate_errors() -> None:
    with pytest.raises(RankTableError, match=r"device\[2\]\.device_ip: device 2 has no address "
                                             r"\(addresses known for devices: 0,1,3\); add "
                                             r"address_2="):
        generate("a", parse_hccn_conf(HCCN_CONF), device_ids=[0, 1, 2])
    with pytest.raises(RankTableError, match=r"no devices to list"):
        generate("a", {})
    with pytest.raises(RankTableError, match=r"device_id 0 appears twice"):
        generate("a", {0: "1.1.1.1"}, device_ids=[0, 0])


EIGHT = {d: f"192.168.100.{101 + d}" for d in range(8)}


@pytest.mark.parametrize("ids, ok", [([4, 5, 6, 7], True), ([0, 1], True), (list(range(8)), True),
                                     ([3, 4], False), ([2, 3, 4, 5], False)])
def test_generate_keeps_hccs_rings_on_910a(ids: List[int], ok: bool) -> None:
    """hccl_tools.py: devices within [0,4) or [4,8), or all of [0,8); other crossings are refused."""
    if ok:
        assert [d.device_id for d in generate("s", EIGHT, ids).servers[0].devices] == ids
    else:
        with pytest.raises(RankTableError, match=r"span both HCCS rings of an Atlas 800"):
            generate("s", EIGHT, ids)
    assert generate("s", EIGHT, ids, chip="910B").world_size == len(ids)  # no rings rule on 910B


def test_generate_ascending_order_and_visible_devices() -> None:
    """hccl_tools.py: ranks in ascending device order; --visible_devices maps logical -> physical."""
    table = generate("s", EIGHT, [7, 5, 6, 4])
    assert [(d.device_id, d.rank_id) for d in table.servers[0].devices] == [(4, 0), (5, 1), (6, 2), (7, 3)]
    table = generate("s", EIGHT, [0, 1], visible_devices=[6, 4, 5, 7])
    assert [d.device_id for d in table.servers[0].devices] == [4, 5]
    assert generate("s", EIGHT, visible_devices=[4, 5, 6, 7]).world_size == 4
    with pytest.raises(RankTableError, match=r"logical device\(s\) \[4\] but 4 visible device\(s\)"):
        generate("s", EIGHT, [4], visible_devices=[4, 5, 6, 7])


# -- merge ------------------------------------------------------------------------------


def _server_table(server_id: str, n: int = 4, first_rank: int = 0, octet: int = 1) -> RankTable:
    return generate(server_id, {d: f"192.168.{octet}.{100 + d}" for d in range(n)},
                    first_rank=first_rank)


def test_merge_renumbers_in_given_order() -> None:
    a, b = _server_table("10.0.0.1"), _server_table("10.0.0.2", n=2, first_rank=4, octet=2)
    merged = merge([b, a])
    assert merged.server_ids == ("10.0.0.2", "10.0.0.1")
    assert [d.rank_id for s in merged.servers for d in s.devices] == list(range(6))
    assert [d.device_id for d in merged.servers[1].devices] == [0, 1, 2, 3]
    assert merged.servers[1].devices[0].device_ip == "192.168.1.100"
    assert merge([merged]) == merged


def test_merge_errors() -> None:
    a = _server_table("10.0.0.1")
    with pytest.raises(RankTableError, match=r"^<merge>: \$\.server_list\[1\]\.server_id: "
                                             r"server_id '10\.0\.0\.1' is in a\.json and in "
                                             r"b\.json; list each server"):
        merge([a, a], names=["a.json", "b.json"])
    with pytest.raises(RankTableError, match=r"in input #1 and in input #2"):
        merge([a, a])
    with pytest.raises(RankTableError, match=r"no tables to merge"):
        merge([])
    v12 = parse(v12_pods())
    with pytest.raises(RankTableError, match=r"\$\.version: inputs mix versions "
                                             r"\(input #1: 1\.0, input #2: 1\.2\)"):
        merge([a, v12])


def _pod_table(pod: str, server_id: str, sdids: List[int]) -> RankTable:
    data = {
        "version": "1.2", "status": "completed", "server_count": "1",
        "server_list": [{"server_id": server_id, "device": [
            dev(i, i, f"10.9.{server_id[-1]}.{i}", super_device_id=str(s)) for i, s in enumerate(sdids)]}],
        "super_pod_list": [{"super_pod_id": pod, "server_list": [{"server_id": server_id}]}],
    }
    return parse(data)


def test_merge_v12_super_pods() -> None:
    merged = merge([_pod_table("0", "n0", [0, 1]), _pod_table("1", "n2", [0, 1]),
                    _pod_table("0", "n1", [2, 3])])
    assert merged.version == "1.2"
    assert merged.server_ids == ("n0", "n2", "n1")
    assert merged.super_pods == (SuperPod("0", ("n0", "n1")), SuperPod("1", ("n2",)))
    assert [d.rank_id for s in merged.servers for d in s.devices] == list(range(6))
    with pytest.raises(RankTableError, match=r"super_device_id 0 is used by .* both in super "
                                             r"pod '0'"):
        merge([_pod_table("0", "n0", [0, 1]), _pod_table("0", "n1", [0, 5])])


# -- local_table ------------------------------------------------------------------------


@pytest.mark.parametrize("ranks,servers,first_ip,ids,per_server", [
    (1, 1, "127.0.0.1", ["127.0.0.1"], 1),
    (8, 1, "127.0.0.1", ["127.0.0.1"], 8),
    (4, 2, "127.0.0.2", ["127.0.0.2", "127.0.0.3"], 2),
    (6, 3, "127.0.0.1", ["127.0.0.1", "127.0.0.2", "127.0.0.3"], 2),
    (2, 2, "10.0.0.255", ["10.0.0.255", "10.0.1.0"], 1),
])
def test_local_table(ranks: int, servers: int, first_ip: str, ids: List[str],
                     per_server: int) -> None:
    table = local_table(ranks, servers, first_ip)
    assert list(table.server_ids) == ids
    assert table.world_size == ranks
    for k, server in enumerate(table.servers):
        assert [d.device_id for d in server.devices] == list(range(per_server))
        assert [d.rank_id for d in server.devices] == [k * per_server + i
                                                       for i in range(per_server)]
        assert {d.device_ip for d in server.devices} == {""}
    assert parse(table.to_json()) == table


@pytest.mark.parametrize("args,pattern", [
    ((3, 2), r"3 ranks do not divide evenly over 2 servers"),
    ((0, 1), r"need n_ranks >= 1"),
    ((2, 0), r"need n_ranks >= 1 and n_servers >= 1"),
    ((17, 1), r"17 ranks per server exceed the 16 device ids"),
    ((2, 1, "localhost"), r"first_ip 'localhost' is not an IPv4 address"),
    ((2, 2, "255.255.255.255"), r"past 255\.255\.255\.255"),
])
def test_local_table_errors(args: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        local_table(*args)


def test_public_api_names() -> None:
    assert set(rank_table.__all__) == {
        "Device", "RankTable", "RankTableError", "RankTableNotReady", "Server", "SuperPod",
        "generate", "load", "local_table", "merge", "node_table", "parse", "parse_hccn_conf",
        "parse_hccn_tool_ip", "wait_until_completed", "write"}


# -- command line (real subprocesses) ---------------------------------------------------


def cli(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "rank_table", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str, code: int = 2) -> None:
    """``code``: 2 bad input (the default), 1 a check that ran and failed (validate)."""
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_cli_validate_summary() -> None:
    proc = cli("validate", "configs/rank_table_2x2_loopback.json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "configs/rank_table_2x2_loopback.json: OK",
        "version 1.0, 2 server(s), world size 4",
        "  server 127.0.0.2: 2 device(s) [0,1], ranks 0..1",
        "  server 127.0.0.3: 2 device(s) [0,1], ranks 2..3",
    ]


def test_cli_validate_broken_table(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(edited(v10_2x2, ("server_list.1.device.0.rank_id", 2))))
    assert_one_line_error(cli("validate", str(path)),
                          re.escape(f"error: {path}: $.server_list[1].device[0].rank_id: is the "
                                    "JSON number 2"), code=1)


def test_cli_validate_missing_and_not_json(tmp_path: Path) -> None:
    assert_one_line_error(cli("validate", str(tmp_path / "nope.json")), r"file not found")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n")
    assert_one_line_error(cli("validate", str(bad)), r"\(line 2, column 1\): not valid JSON", code=1)


def test_cli_validate_wait_timeout(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(INITIALIZING))
    proc = cli("validate", str(path), "--wait", "--timeout", "0")
    assert_one_line_error(proc, r"no completed rank table after 0 s .*raise the timeout \(--timeout SECONDS\)$",
                          code=1)


def test_cli_validate_wait_ready(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    write(local_table(2), path)
    proc = cli("validate", str(path), "--wait", "--timeout", "5")
    assert proc.returncode == 0 and "world size 2" in proc.stdout


@pytest.mark.parametrize("args,pattern", [
    ((), r"the following arguments are required: COMMAND"),
    (("frobnicate",), r"invalid choice: 'frobnicate'"),
    (("validate", "x.json", "--timeout", "3"), r"--timeout only applies with --wait"),
    (("local", "--ranks", "0"), r"argument --ranks: '0' is not an integer >= 1"),
    (("local", "--ranks", "3", "--servers", "2"), r"do not divide evenly"),
    (("generate", "--server-id", "a"), r"one of the arguments --hccn-conf --hccn-tool is required"),
    (("generate", "--server-id", "a", "--hccn-tool", "--devices", "0,x"), r"not a device list"),
])
def test_cli_usage_errors(args: Any, pattern: str) -> None:
    assert_one_line_error(cli(*args), pattern)


def test_cli_local_stdout_and_file(tmp_path: Path) -> None:
    proc = cli("local", "--ranks", "4", "--servers", "2", "--first-ip", "127.0.0.2")
    assert proc.returncode == 0, proc.stderr
    assert parse(json.loads(proc.stdout)) == load(REPO / "configs/rank_table_2x2_loopback.json")
    out = tmp_path / "local.json"
    proc = cli("local", "--ranks", "2", "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert load(out) == local_table(2)


def test_cli_generate_from_hccn_conf_and_merge(tmp_path: Path) -> None:
    conf = tmp_path / "hccn.conf"
    conf.write_text(HCCN_CONF)
    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "all.json"
    assert cli("generate", "--server-id", "10.0.0.1", "--hccn-conf", str(conf),
               "-o", str(a)).returncode == 0
    other = tmp_path / "hccn2.conf"  # the second server's devices have their own addresses
    other.write_text(HCCN_CONF.replace("192.168.100.", "192.168.200."))
    proc = cli("generate", "--server-id", "10.0.0.2", "--hccn-conf", str(other),
               "--devices", "0,1", "--first-rank", "3", "-o", str(b))
    assert proc.returncode == 0, proc.stderr
    proc = cli("merge", str(a), str(b), "-o", str(merged))
    assert proc.returncode == 0, proc.stderr
    table = load(merged)
    assert table.server_ids == ("10.0.0.1", "10.0.0.2")
    assert [d.rank_id for d in table.servers[1].devices] == [3, 4]
    assert_one_line_error(cli("merge", str(a), str(a)), r"server_id '10\.0\.0\.1' is in .*a\.json "
                                                        r"and in .*a\.json")
    assert_one_line_error(cli("generate", "--server-id", "x", "--hccn-conf",
                              str(tmp_path / "none.conf")), r"none\.conf: file: cannot read")


FAKE_HCCN_TOOL = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.log"
if [ "$2" = "9" ]; then echo "device 9 not found" >&2; exit 1; fi
echo "ipaddr:192.168.100.$((101 + $2))"
echo "netmask:255.255.255.0"
"""


@pytest.fixture
def fake_hccn_tool(tmp_path: Path) -> Dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "hccn_tool"
    tool.write_text(FAKE_HCCN_TOOL)
    tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_cli_generate_with_hccn_tool(tmp_path: Path, fake_hccn_tool: Dict[str, str]) -> None:
    proc = cli("generate", "--server-id", "10.0.0.1", "--hccn-tool", "--devices", "0,1,2,3",
               env=fake_hccn_tool)
    assert proc.returncode == 0, proc.stderr
    table = parse(json.loads(proc.stdout))
    assert [(d.device_id, d.device_ip) for d in table.servers[0].devices] == [
        (i, f"192.168.100.{101 + i}") for i in range(4)]
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert calls == [f"-i {i} -ip -g" for i in range(4)]


def test_cli_generate_with_hccn_tool_defaults_and_failures(
        tmp_path: Path, fake_hccn_tool: Dict[str, str]) -> None:
    proc = cli("generate", "--server-id", "10.0.0.1", "--hccn-tool", env=fake_hccn_tool)
    assert proc.returncode == 0, proc.stderr
    assert parse(json.loads(proc.stdout)).world_size == 8
    assert_one_line_error(
        cli("generate", "--server-id", "a", "--hccn-tool", "--devices", "9", env=fake_hccn_tool),
        r"^error: hccn_tool -i 9 -ip -g: exited with status 1 \(device 9 not found\)")
    assert_one_line_error(
        cli("generate", "--server-id", "a", "--hccn-tool", "--hccn-tool-bin",
            str(tmp_path / "missing_tool")),
        r"missing_tool: command not found; .*--hccn-conf FILE \(on Ascend servers /etc/hccn.conf\)$")
