"""Validate HCCL rank table JSON (template 1, versions 1.0 and 1.2) into :class:`RankTable`.

Unknown-keys policy
-------------------
Every object level (top, server, device, super pod) has an allow-list made of the keys
that the public writers of template-1 tables emit: HCCL's own documentation (including
the A3 SuperPoD keys), MindSpore/ModelZoo ``hccl_tools.py`` (``host_nic_ip``) and
ascend-operator's ``hccl.json`` (``host_ip``, ``container_ip``, ``hardware_type``).
Any other key is an error that names the key, its JSON path and the keys allowed there.

Why not ignore unknown keys? A typo (``"rank"`` for ``"rank_id"``, ``"devices"`` for
``"device"``) or a file in another format (template 2 ``group_list``, ClusterD's
``server_group_list``) would otherwise be read as something it is not, and HCCL would
fail much later, on every rank, with a timeout instead of a message. Why not reject all
extras? Vendor tools do write the documented optional keys, and HCCL uses some of them
(``device_port``, ``backup_device_ip``, ...): those are accepted and kept verbatim in
``Device.extras`` so that ``to_json`` writes them back. If a newer CANN documents a new
key, add it to ``DEVICE_EXTRA_KEYS`` (or the matching set) here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, FrozenSet, List, NoReturn, Optional, Sequence, Tuple

from common.inputs import shown

from .errors import RankTableError, RankTableNotReady
from .model import Device, RankTable, Server, SuperPod

VERSIONS = ("1.0", "1.2")
STATUS_COMPLETED = "completed"
STATUS_INITIALIZING = "initializing"
MAX_DEVICE_ID = 15
MAX_STRING = 1024  # longer than any id, address list or hardware type a writer emits
# A host name as RFC 1123 section 2.1 allows it (letters, digits, '-', dot-separated labels of at most
# 63, 253 in all), the form of Kubernetes node and pod names (DNS-1123) in any case; server_id is also
# what the ranks connect to (TF_CONFIG, MASTER_ADDR, HOROVOD_HOSTNAME), so it must resolve as a host.
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*")

TOP_KEYS: FrozenSet[str] = frozenset(
    {"version", "status", "server_count", "server_list", "super_pod_list"}
)
SERVER_KEYS: FrozenSet[str] = frozenset(
    {"server_id", "device", "host_ip", "container_ip", "host_nic_ip", "hardware_type"}
)
DEVICE_KEYS: FrozenSet[str] = frozenset({"device_id", "device_ip", "rank_id", "super_device_id"})
#: Documented optional device keys (HCCL A3 rank table, ClusterD): kept, not interpreted.
DEVICE_EXTRA_KEYS: FrozenSet[str] = frozenset(
    {"device_port", "device_vnic_port", "backup_device_ip", "backup_device_port", "host_port",
     "device_logical_id"}
)
SUPER_POD_KEYS: FrozenSet[str] = frozenset({"super_pod_id", "server_list"})
SUPER_POD_SERVER_KEYS: FrozenSet[str] = frozenset({"server_id"})

_OTHER_FORMATS = {
    "group_list": (
        "this is the legacy template-2 layout (group_list/instance_list)",
        (
            "write a template-1 table (version, status, server_count, server_list), "
            "e.g. with `python -m rank_table generate`"
        ),
    ),
    "server_group_list": (
        "this is a ClusterD global-ranktable, not a per-job HCCL rank table",
        "point the launcher at the job's hccl.json written by ascend-operator",
    ),
}


def parse(data: object, source: str = "<rank table>") -> RankTable:
    """Validate decoded rank table JSON and return the typed table.

    Raises :class:`RankTableNotReady` when ``status`` is ``"initializing"`` and
    :class:`RankTableError` for every other problem. Rank ids must be exactly
    ``0..N-1``, as HCCL requires.
    """
    return parse_with_rank_base(data, source, rank_base=0)


def parse_with_rank_base(data: object, source: str, rank_base: Optional[int]) -> RankTable:
    """Like :func:`parse`, but the ranks may start at ``rank_base`` instead of 0.

    ``rank_base=None`` takes the smallest rank in the table. Used for per-server
    fragments (``generate --first-rank N``) that are only meant to be merged.
    """
    return _Parser(source).table(data, rank_base)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str, fix: str) -> NoReturn:
        raise RankTableError(self.source, path, problem, fix)

    # -- scalar helpers -------------------------------------------------------------

    def obj(self, value: object, path: str, what: str) -> Dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"{what} must be a JSON object, got {_kind(value)}",
                      "write it as {...}")
        return value

    def keys(self, value: Dict[str, Any], path: str, allowed: FrozenSet[str], what: str) -> None:
        for key in value:
            if key not in allowed:
                self.fail(
                    _join(path, key),
                    f"unknown key {shown(key)} in {what}",
                    "remove it or fix its spelling; allowed keys here: "
                    + ", ".join(sorted(allowed)),
                )

    def required(self, value: Dict[str, Any], path: str, key: str, what: str) -> Any:
        if key not in value:
            self.fail(_join(path, key), f"{what} has no {key!r}", f"add \"{key}\"")
        return value[key]

    def string(self, value: object, path: str, *, non_empty: bool = True) -> str:
        if isinstance(value, bool):
            self.fail(path, f"is the JSON boolean {str(value).lower()}; HCCL reads every value "
                      "as a string", f"quote it: \"{str(value).lower()}\"")
        if isinstance(value, (int, float)):
            self.fail(path, f"is the JSON number {shown(value)}; HCCL reads every value as a string",
                      f"quote it: \"{shown(value)}\"")
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_kind(value)}", "write a quoted string")
        if non_empty and not value.strip():
            self.fail(path, "is empty", "fill in a value")
        if len(value) > MAX_STRING:
            self.fail(path, f"is {len(value)} characters long (at most {MAX_STRING})",
                      "check that this is a rank table")
        if not value.isprintable():  # a newline would forge a log line; a lone surrogate cannot be printed
            bad = next(c for c in value if not c.isprintable())
            self.fail(path, f"{shown(value)} contains the non-printable character U+{ord(bad):04X}",
                      "write plain text: no control, format or unpaired surrogate characters")
        return value

    def server_id(self, value: object, path: str) -> str:
        text = self.string(value, path)
        if not (_is_ip(text) or HOSTNAME.fullmatch(text)):
            self.fail(path, f"{shown(text)} is neither an IP address nor a host name",
                      "write the server's IP address (as HCCL's examples and hccl_tools do) or its host "
                      "name (letters, digits, '-' and '.')")
        return text

    def int_string(self, value: object, path: str, lo: int = 0, hi: Optional[int] = None) -> int:
        text = self.string(value, path)
        if not (text.isascii() and text.isdigit()):
            self.fail(path, f"{shown(text)} is not a non-negative integer",
                      "write a decimal integer in quotes, e.g. \"0\"")
        number = int(text)
        if number < lo or (hi is not None and number > hi):
            self.fail(path, f"{number} is outside {lo}..{hi}", f"use a value in {lo}..{hi}")
        return number

    def optional_ip(self, value: object, path: str) -> Optional[str]:
        text = self.string(value, path, non_empty=False)
        if not text:
            return None  # ascend-operator writes "host_ip": "" when it has no address
        try:
            ipaddress.ip_address(text)
        except ValueError:
            self.fail(path, f"{shown(text)} is not an IP address",
                      "write a dotted IPv4 (or IPv6) address, or remove the key")
        return text

    # -- structure ------------------------------------------------------------------

    def table(self, data: object, rank_base: Optional[int]) -> RankTable:
        top = self.obj(data, "$", "a rank table")
        status = self.string(self.required(top, "$", "status", "the rank table"), "$.status")
        if status == STATUS_INITIALIZING:
            raise RankTableNotReady(
                self.source, "$.status", "status is \"initializing\": the table is not written yet",
                "wait for status \"completed\" (validate --wait, or wait_until_completed())",
            )
        if status != STATUS_COMPLETED:
            self.fail("$.status", f"unknown status {shown(status)}",
                      f"use \"{STATUS_COMPLETED}\" (or \"{STATUS_INITIALIZING}\" while writing)")
        for key, (problem, fix) in _OTHER_FORMATS.items():
            if key in top:
                self.fail(_join("$", key), problem, fix)
        self.keys(top, "$", TOP_KEYS, "the rank table")
        version = self.string(self.required(top, "$", "version", "the rank table"), "$.version")
        if version not in VERSIONS:
            self.fail("$.version", f"unsupported version {shown(version)}",
                      "use \"1.0\" (or \"1.2\" for A3 SuperPoD tables)")
        raw_servers = self.required(top, "$", "server_list", "the rank table")
        if not isinstance(raw_servers, list):
            self.fail("$.server_list", f"must be a JSON list, got {_kind(raw_servers)}",
                      "write it as [ {...}, ... ]")
        if not raw_servers:
            self.fail("$.server_list", "is empty",
                      "list at least one server with its devices")
        # HCCL only warns when server_count is missing and takes the list's length.
        count = (self.int_string(top["server_count"], "$.server_count") if "server_count" in top
                 else len(raw_servers))
        if count != len(raw_servers):
            self.fail("$.server_count",
                      f"says {count} but server_list has {len(raw_servers)} entries",
                      f"set \"server_count\": \"{len(raw_servers)}\"")

        v12 = version == "1.2"
        placed: List[_Placed] = []
        seen_ids: Dict[str, str] = {}
        addresses = _DeviceAddresses(self, multi_server=len(raw_servers) > 1)
        for i, raw in enumerate(raw_servers):
            one = self.server(raw, f"$.server_list[{i}]", v12, addresses)
            sid = one.server.server_id
            if sid in seen_ids:
                self.fail(f"{one.path}.server_id",
                          f"duplicate server_id {sid!r} (also at {seen_ids[sid]})",
                          "give each server a unique server_id, or list its devices once")
            seen_ids[sid] = f"{one.path}.server_id"
            placed.append(one)

        self.ranks(placed, rank_base)
        servers = tuple(p.server for p in placed)  # in rank order, checked by ranks()
        super_pods: Tuple[SuperPod, ...] = ()
        if v12:
            super_pods = self.super_pods(top, servers)
        elif "super_pod_list" in top:
            self.fail("$.super_pod_list", "super_pod_list is only valid in version 1.2 tables",
                      "set \"version\": \"1.2\" or remove super_pod_list")
        return RankTable(version=version, status=status, servers=servers, super_pods=super_pods)

    def server(self, raw: object, path: str, v12: bool, addresses: _DeviceAddresses) -> _Placed:
        entry = self.obj(raw, path, "a server entry")
        self.keys(entry, path, SERVER_KEYS, "a server entry")
        server_id = self.server_id(self.required(entry, path, "server_id", "the server entry"),
                                   f"{path}.server_id")
        raw_devices = self.required(entry, path, "device", "the server entry")
        if not isinstance(raw_devices, list) or not raw_devices:
            self.fail(f"{path}.device", f"must be a non-empty list, got {_kind(raw_devices)}",
                      "list the server's devices: [{\"device_id\": \"0\", ...}, ...]")
        devices: List[Device] = []
        file_index: Dict[int, int] = {}
        # HCCL reads device_ip only when the server has no host_ip (NIC on the host).
        host_nic = bool(entry.get("host_ip"))
        for j, raw_device in enumerate(raw_devices):
            dpath = f"{path}.device[{j}]"
            device = self.device(raw_device, dpath, v12, None if host_nic else addresses)
            if device.device_id in file_index:
                self.fail(f"{dpath}.device_id",
                          f"device_id {device.device_id} appears twice on server {server_id!r} "
                          f"(also at {path}.device[{file_index[device.device_id]}])",
                          "list each physical device once per server")
            file_index[device.device_id] = j
            devices.append(device)
        optional: Dict[str, Optional[str]] = {}
        for key in ("host_ip", "container_ip"):
            if key in entry:
                optional[key] = self.optional_ip(entry[key], f"{path}.{key}")
        for key in ("host_nic_ip", "hardware_type"):
            if key in entry:
                optional[key] = self.string(entry[key], f"{path}.{key}", non_empty=False)
        server = Server(
            server_id=server_id,
            devices=tuple(sorted(devices, key=lambda d: d.rank_id)),
            **optional,
        )
        return _Placed(server, path, file_index)

    def device(self, raw: object, path: str, v12: bool, addresses: Optional[_DeviceAddresses]) -> Device:
        entry = self.obj(raw, path, "a device entry")
        self.keys(entry, path, DEVICE_KEYS | DEVICE_EXTRA_KEYS, "a device entry")
        what = "the device entry"
        device_id = self.int_string(self.required(entry, path, "device_id", what),
                                    f"{path}.device_id", 0, MAX_DEVICE_ID)
        device_ip: Optional[str] = None
        if "device_ip" in entry:
            device_ip = self.string(entry["device_ip"], f"{path}.device_ip", non_empty=False)
        if addresses is not None:
            addresses.check(device_ip, path)
        rank_id = self.int_string(self.required(entry, path, "rank_id", what), f"{path}.rank_id")
        super_device_id: Optional[int] = None
        if v12:
            if "super_device_id" not in entry:
                self.fail(f"{path}.super_device_id", "a version 1.2 device has no super_device_id",
                          "add \"super_device_id\" (from `npu-smi info`), or use version 1.0 "
                          "if this is not a SuperPoD")
            super_device_id = self.int_string(entry["super_device_id"], f"{path}.super_device_id")
        elif "super_device_id" in entry:
            self.fail(f"{path}.super_device_id", "super_device_id is only valid in version 1.2",
                      "set \"version\": \"1.2\" (with a super_pod_list) or remove it")
        extras = tuple(
            (key, self.string(value, f"{path}.{key}"))
            for key, value in entry.items()
            if key in DEVICE_EXTRA_KEYS
        )
        return Device(device_id, device_ip, rank_id, super_device_id, extras)

    def ranks(self, servers: Sequence[_Placed], rank_base: Optional[int]) -> None:
        seen: Dict[int, str] = {}
        for placed in servers:
            for device in placed.server.devices:
                dpath = placed.rank_path(device)
                if device.rank_id in seen:
                    self.fail(dpath, f"rank_id {device.rank_id} is used twice (also at "
                              f"{seen[device.rank_id]})", "give every device a unique rank_id")
                seen[device.rank_id] = dpath
        size = len(seen)
        base = min(seen) if rank_base is None else rank_base
        last = base + size - 1
        for rank, dpath in sorted(seen.items()):
            if not base <= rank <= last:
                missing = next(r for r in range(base, last + 1) if r not in seen)
                fix = f"number the ranks {base}..{last} without gaps"
                if base == 0:
                    fix += (" (per-server fragments from `generate --first-rank` must be "
                            "combined with `python -m rank_table merge`)")
                self.fail(dpath, f"rank_id {rank} is outside {base}..{last} (the table has "
                          f"{size} devices; rank {missing} is missing)", fix)
        for placed in servers:
            ranks = [d.rank_id for d in placed.server.devices]
            for a, b in zip(ranks, ranks[1:]):
                if b != a + 1:
                    self.fail(f"{placed.path}.device",
                              f"server {placed.server.server_id!r} holds ranks {a} and {b} but "
                              f"not {a + 1}; each server must hold one contiguous block of ranks",
                              "renumber so that the devices of a server have consecutive rank_ids")
        for before, after in zip(servers, servers[1:]):
            if after.server.devices[0].rank_id < before.server.devices[0].rank_id:
                self.fail(after.path,
                          f"server {after.server.server_id!r} (ranks {_span(after.server)}) comes "
                          f"after server {before.server.server_id!r} "
                          f"(ranks {_span(before.server)})",
                          "list servers in rank order (ascending first rank_id)")

    def super_pods(self, top: Dict[str, Any], servers: Sequence[Server]) -> Tuple[SuperPod, ...]:
        raw_pods = top.get("super_pod_list")
        if raw_pods is None:
            self.fail("$.super_pod_list", "a version 1.2 table has no super_pod_list",
                      "add \"super_pod_list\": [{\"super_pod_id\": \"0\", \"server_list\": "
                      "[{\"server_id\": ...}]}], or use version 1.0")
        if not isinstance(raw_pods, list) or not raw_pods:
            self.fail("$.super_pod_list", f"must be a non-empty list, got {_kind(raw_pods)}",
                      "list every super pod with its servers")
        by_id = {s.server_id: s for s in servers}
        placed: Dict[str, str] = {}
        pod_ids: Dict[str, str] = {}
        pods: List[SuperPod] = []
        for i, raw in enumerate(raw_pods):
            path = f"$.super_pod_list[{i}]"
            entry = self.obj(raw, path, "a super pod entry")
            self.keys(entry, path, SUPER_POD_KEYS, "a super pod entry")
            pod_id = self.string(self.required(entry, path, "super_pod_id", "the super pod"),
                                 f"{path}.super_pod_id")
            if pod_id in pod_ids:
                self.fail(f"{path}.super_pod_id",
                          f"duplicate super_pod_id {pod_id!r} (also at {pod_ids[pod_id]})",
                          "give each super pod a unique id")
            pod_ids[pod_id] = f"{path}.super_pod_id"
            members = self.required(entry, path, "server_list", "the super pod")
            if not isinstance(members, list) or not members:
                self.fail(f"{path}.server_list", f"must be a non-empty list, got {_kind(members)}",
                          "list the pod's servers: [{\"server_id\": ...}]")
            ids: List[str] = []
            for j, member in enumerate(members):
                mpath = f"{path}.server_list[{j}]"
                m = self.obj(member, mpath, "a super pod member")
                self.keys(m, mpath, SUPER_POD_SERVER_KEYS, "a super pod member")
                sid = self.string(self.required(m, mpath, "server_id", "the member"),
                                  f"{mpath}.server_id")
                if sid not in by_id:
                    self.fail(f"{mpath}.server_id",
                              f"server_id {sid!r} is not in $.server_list",
                              f"use one of {', '.join(sorted(by_id))}")
                if sid in placed:
                    self.fail(f"{mpath}.server_id",
                              f"server {sid!r} is listed twice (also at {placed[sid]})",
                              "put each server in exactly one super pod")
                placed[sid] = f"{mpath}.server_id"
                ids.append(sid)
            self.super_device_ids(pod_id, [by_id[sid] for sid in ids])
            pods.append(SuperPod(pod_id, tuple(ids)))
        missing = [s.server_id for s in servers if s.server_id not in placed]
        if missing:
            self.fail("$.super_pod_list",
                      f"server(s) {', '.join(repr(m) for m in missing)} are in no super pod",
                      "add each server of server_list to exactly one super pod")
        return tuple(pods)

    def super_device_ids(self, pod_id: str, servers: Sequence[Server]) -> None:
        # super_device_id numbers a device inside its SuperPoD, so it is unique per pod;
        # two pods may reuse the same numbers.
        seen: Dict[int, str] = {}
        for server in servers:
            for device in server.devices:
                sdid = device.super_device_id
                assert sdid is not None  # guaranteed for v1.2 by device()
                where = f"server {server.server_id!r} device {device.device_id}"
                if sdid in seen:
                    self.fail(
                        "$.super_pod_list",
                        f"super_device_id {sdid} is used by {seen[sdid]} and by {where}, "
                        f"both in super pod {pod_id!r}",
                        "super_device_id must be unique within a super pod; re-read it with "
                        "`npu-smi info`",
                    )
                seen[sdid] = where


class _DeviceAddresses:
    """``device_ip`` as HCCL's concise rank-table parser reads it (GetSingleDeviceIp in
    topoinfo_ranktableConcise.cc): required when the table has several servers, optional on one;
    empty is allowed (HCCL warns); several comma-separated IPv4 or IPv6 addresses, each unique in the
    whole table; every device with the same number of addresses (absent or empty counts as one)."""

    def __init__(self, parser: _Parser, multi_server: bool) -> None:
        self.parser, self.multi_server = parser, multi_server
        self.seen: Dict[str, str] = {}
        self.count: Optional[Tuple[int, str]] = None

    def check(self, text: Optional[str], path: str) -> None:
        where = f"{path}.device_ip"
        if text is None and self.multi_server:
            self.parser.fail(where, "the device entry has no 'device_ip'; HCCL needs it when the table "
                             "has several servers", "add \"device_ip\" (from /etc/hccn.conf or "
                             "`hccn_tool -i <id> -ip -g`)")
        parts = text.split(",") if text else [""]
        for part in parts if text else []:
            address = part.strip()
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                self.parser.fail(where, f"{shown(address)} is not an IP address",
                                 "use the device NIC address(es) from /etc/hccn.conf or "
                                 "`hccn_tool -i <id> -ip -g`, comma-separated if several")
            if ip.is_unspecified or ip.is_multicast:  # a NIC's own address is a unicast one
                self.parser.fail(where, f"{address} is {'unspecified' if ip.is_unspecified else 'a multicast'} "
                                 "address, not a device NIC's", "use the device NIC address(es) from "
                                 "/etc/hccn.conf or `hccn_tool -i <id> -ip -g`")
            if address in self.seen:
                self.parser.fail(where, f"device_ip {address} is also at {self.seen[address]}; HCCL needs "
                                 "every device address to be unique", "give each device its own NIC address")
            self.seen[address] = where
        if self.count is None:
            self.count = (len(parts), where)
        elif self.count[0] != len(parts):
            self.parser.fail(where, f"has {len(parts)} address(es) but {self.count[1]} has {self.count[0]}; "
                             "HCCL needs the same number on every device", "list as many addresses everywhere")


class _Placed:
    """A parsed server with where it was in the file (for error paths)."""

    def __init__(self, server: Server, path: str, file_index: Dict[int, int]) -> None:
        self.server = server
        self.path = path
        self.file_index = file_index  # device_id -> index in the file's device list

    def rank_path(self, device: Device) -> str:
        return f"{self.path}.device[{self.file_index[device.device_id]}].rank_id"


def _span(server: Server) -> str:
    return f"{server.devices[0].rank_id}..{server.devices[-1].rank_id}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key if key.isprintable() and len(key) <= 80 else shown(key)}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
