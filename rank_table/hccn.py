"""Device NIC addresses from ``/etc/hccn.conf`` or ``hccn_tool``, as hccl tooling does."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Callable, Dict, List, Optional, Sequence

from common.inputs import shown

from .errors import RankTableError
from .parse import MAX_DEVICE_ID

_ADDRESS_KEY = re.compile(r"address_(\d+)")

#: Runs an argument list and returns the completed process (``subprocess.run`` shape).
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def parse_hccn_conf(text: str, source: str = "/etc/hccn.conf") -> Dict[int, str]:
    """Map device id -> IPv4 from ``address_<id>=<ip>`` lines.

    Other lines (``netmask_0=...``, ``netdetect_0=...``, comments, blanks) are ignored.
    A malformed address line or a device listed twice is a :class:`RankTableError`.
    """
    found: Dict[int, str] = {}
    lines: Dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = (part.strip() for part in stripped.partition("="))
        match = _ADDRESS_KEY.fullmatch(key)
        if not match:
            continue
        where = f"line {number}"
        digits = match.group(1)
        device_id = int(digits) if len(digits) <= 4 else MAX_DEVICE_ID + 1  # int() of 5000 digits raises
        if device_id > MAX_DEVICE_ID:
            raise RankTableError(source, where, f"device id {digits if len(digits) <= 8 else shown(digits)} "
                                 "is outside 0..15", "fix the address_<id> key")
        if device_id in found:
            raise RankTableError(source, where, f"address_{device_id} is set twice (also on "
                                 f"line {lines[device_id]})", "keep one address per device")
        found[device_id] = _ipv4(value, source, where, f"address_{device_id}")
        lines[device_id] = number
    return found


def parse_hccn_tool_ip(text: str, source: str = "hccn_tool output") -> str:
    """The ``ipaddr`` of ``hccn_tool -i <id> -ip -g`` output (``ipaddr:1.2.3.4`` line)."""
    for number, line in enumerate(text.splitlines(), start=1):
        key, sep, value = line.partition(":")
        if sep and key.strip() == "ipaddr":
            return _ipv4(value.strip(), source, f"line {number}", "ipaddr")
    raise RankTableError(
        source, "ipaddr", "no 'ipaddr:<address>' line in the output",
        "configure the device NIC (hccn_tool -i <id> -ip -s address <ip> netmask <mask>) "
        "or use --hccn-conf",
    )


def query_hccn_tool(
    device_ids: Sequence[int],
    binary: str = "hccn_tool",
    run: Optional[Runner] = None,
    timeout_s: float = 30.0,
) -> Dict[int, str]:
    """Run ``<binary> -i <id> -ip -g`` for each device (argument list, no shell)."""
    runner: Runner = run or subprocess.run
    found: Dict[int, str] = {}
    for device_id in device_ids:
        argv: List[str] = [binary, "-i", str(device_id), "-ip", "-g"]
        command = " ".join(argv)
        try:
            proc = runner(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except FileNotFoundError:
            raise RankTableError(binary, "", "command not found",
                                 "install the Ascend driver tools, pass --hccn-tool-bin PATH, "
                                 "or use --hccn-conf FILE (on Ascend servers /etc/hccn.conf)") from None
        except subprocess.TimeoutExpired:
            raise RankTableError(command, "", f"did not answer within {timeout_s:g} s",
                                 "check the NPU driver (npu-smi info)") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()
            last = detail[-1] if detail else "no output"
            raise RankTableError(command, "", f"exited with status {proc.returncode} ({last})",
                                 f"check that device {device_id} exists (npu-smi info) or "
                                 "choose devices with --devices")
        found[device_id] = parse_hccn_tool_ip(proc.stdout, f"output of `{command}`")
    return found


def _ipv4(value: str, source: str, where: str, key: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise RankTableError(source, where, f"{key} {shown(value)} is not an IPv4 address",
                             "write a dotted IPv4 address, e.g. 192.168.100.101") from None
    return value
