"""Command line: ``python -m rank_table {validate,generate,merge,local} ...``.

Exit status (common.exits, as every command line of the project): 0 on success; 1 when
``validate`` finds the table invalid (or never completed); 2 for bad arguments or bad input
(a file that cannot be read), with one line on stderr (no traceback); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, NoReturn, Optional, Sequence

from common import inputs
from common.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from common.version import VERSION

from .build import generate, local_table, merge
from .devices import CHIPS
from .errors import RankTableError, RankTableUnreadable
from .files import load, load_with_rank_base, wait_until_completed, write
from .hccn import parse_hccn_conf, query_hccn_tool
from .model import RankTable, describe
from .parse import MAX_DEVICE_ID

PROG = "python -m rank_table"
OUTPUT_HELP = "write the table to this file, atomically (default: print it)"
DEFAULT_TOOL_DEVICES = tuple(range(8))


class UsageError(Exception):
    """Bad command line; reported as one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage + exit
        raise UsageError(message)


def _device_list(text: str) -> List[int]:
    """``0,1,2,3`` or ``0-3`` or ``0-3,6`` -> ``[0, 1, 2, 3, 6]``."""
    ids: List[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            ids.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device list; write e.g. 0,1,2,3 or 0-3") from None
    if not ids or any(not 0 <= d <= MAX_DEVICE_ID for d in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(
            f"{text!r}: need distinct device ids in 0..15, e.g. 0,1,2,3")
    return ids


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog=PROG, description="Validate, generate and merge HCCL rank "
                             "tables (RANK_TABLE_FILE).",
                             epilog="exit codes: 0 ok; 1 validate found the table invalid; 2 bad "
                             "arguments or input (one line naming the fix)")
    parser.add_argument("--version", action="version", version=f"{PROG} {VERSION}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("validate", help="check a rank table and print a summary")
    p.add_argument("file", metavar="FILE", help="the rank table (JSON)")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object (ok, error, version, world_size, servers)")
    p.add_argument("--wait", action="store_true",
                   help="re-read the file while it is missing or status is initializing")
    p.add_argument("--timeout", type=_seconds, default=None,
                   help="with --wait: give up after this many seconds (default 300)")
    p.add_argument("--poll", type=_positive_seconds, default=5.0,
                   help="with --wait: seconds between reads (default 5)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("generate", help="one server's table from its device NIC addresses")
    p.add_argument("--server-id", required=True, help="this server's id (usually its host IP)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--hccn-conf", metavar="PATH", help="read address_<id>=<ip> lines")
    source.add_argument("--hccn-tool", action="store_true",
                        help="ask `hccn_tool -i <id> -ip -g` for each device")
    p.add_argument("--hccn-tool-bin", default="hccn_tool", metavar="BIN",
                   help="hccn_tool executable (default: hccn_tool on PATH)")
    p.add_argument("--devices", type=_device_list, default=None,
                   help="device ids, e.g. 0,1,2,3 or 0-3 (default: all in hccn.conf; "
                   "0-7 with --hccn-tool)")
    p.add_argument("--visible-devices", type=_device_list, default=None, metavar="LIST",
                   help="as hccl_tools' --visible_devices: the physical devices a container sees "
                   "(its ASCEND_VISIBLE_DEVICES); --devices then counts among them (logical ids)")
    p.add_argument("--chip", choices=CHIPS + ("none",), default="910A",
                   help="910A (default): devices 0-7 within one HCCS ring (0-3 or 4-7) or all 8, "
                   "as hccl_tools requires; 910B: devices 0-15; none: no check")
    p.add_argument("--first-rank", type=_non_negative_int, default=0,
                   help="rank of the first device (N > 0 makes a fragment for `merge`)")
    p.add_argument("-o", "--output", metavar="OUT", help=OUTPUT_HELP)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("merge", help="join per-server tables, renumbering ranks 0..N-1")
    p.add_argument("files", nargs="+", metavar="FILE", help="per-server tables, in server order")
    p.add_argument("-o", "--output", metavar="OUT", help=OUTPUT_HELP)
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("local", help="a loopback table for CPU ranks")
    p.add_argument("--ranks", type=_positive_int, required=True, help="ranks in all (the world size)")
    p.add_argument("--servers", type=_positive_int, default=1,
                   help="split the ranks evenly over this many loopback servers (default 1)")
    p.add_argument("--first-ip", default="127.0.0.1",
                   help="server_id of the first server; the next ones count up (default 127.0.0.1)")
    p.add_argument("-o", "--output", metavar="OUT", help=OUTPUT_HELP)
    p.set_defaults(func=_cmd_local)
    return parser


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout only applies with --wait")
    try:
        if args.wait:
            timeout = 300.0 if args.timeout is None else args.timeout
            table = wait_until_completed(args.file, timeout_s=timeout, poll_s=args.poll, report=_stderr)
        else:
            table = load(args.file)
    except RankTableUnreadable:
        raise  # missing, a folder, a FIFO, too large: not a table to check, bad input
    except RankTableError as exc:  # the check ran and failed
        if args.json:
            print(json.dumps({"file": args.file, "ok": False, "error": _one_line(str(exc))}))
        _stderr(_one_line(f"error: {exc}"))
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"file": args.file, "ok": True, "error": None, "version": table.version,
                          "world_size": table.world_size,
                          "servers": [{"server_id": s.server_id, "device_ids": [d.device_id for d in s.devices],
                                       "rank_ids": [d.rank_id for d in s.devices]} for s in table.servers]}))
        return EXIT_OK
    print(f"{args.file}: OK")
    for line in describe(table):
        print(line)
    return EXIT_OK


def _cmd_generate(args: argparse.Namespace) -> int:
    if args.hccn_conf is not None:
        try:
            text = inputs.read_text(args.hccn_conf, inputs.TEXT_BYTES, "hccn.conf")
        except OSError as exc:
            raise RankTableError(args.hccn_conf, "file", f"cannot read: {exc.strerror or exc}",
                                 "check the path: --hccn-conf takes the file of address_<id>=<ip> lines "
                                 "(on Ascend servers /etc/hccn.conf), or use --hccn-tool") from None
        except inputs.InputError as exc:
            raise RankTableError(args.hccn_conf, "file", exc.problem, exc.fix) from None
        addresses = parse_hccn_conf(text, args.hccn_conf)
        device_ids = args.devices
    else:
        device_ids = args.devices or list(DEFAULT_TOOL_DEVICES)
        physical = ([args.visible_devices[i] for i in device_ids if i < len(args.visible_devices)]
                    if args.visible_devices else device_ids)
        addresses = query_hccn_tool(physical, binary=args.hccn_tool_bin)
        if args.visible_devices and args.devices is None:
            device_ids = None  # every visible device
    table = generate(args.server_id, addresses, device_ids, first_rank=args.first_rank,
                     chip=None if args.chip == "none" else args.chip, visible_devices=args.visible_devices,
                     address_file=args.hccn_conf or "/etc/hccn.conf")
    return _emit(table, args.output)


def _cmd_merge(args: argparse.Namespace) -> int:
    tables = [load_with_rank_base(path, rank_base=None) for path in args.files]
    return _emit(merge(tables, names=args.files), args.output)


def _cmd_local(args: argparse.Namespace) -> int:
    return _emit(local_table(args.ranks, args.servers, args.first_ip), args.output)


def _emit(table: RankTable, output: Optional[str]) -> int:
    if output is None:
        print(json.dumps(table.to_json(), indent=2))
    else:
        write(table, output)
        _stderr(f"wrote {output}: {describe(table)[0]}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except UsageError as exc:
        _stderr(_one_line(f"{PROG}: error: {exc} (see {PROG} --help)"))
    except (RankTableError, ValueError) as exc:
        _stderr(_one_line(f"error: {exc}"))
    except OSError as exc:
        _stderr(_one_line(f"error: {exc}"))
    except KeyboardInterrupt:
        _stderr("interrupted")
        return 130
    return EXIT_BAD_INPUT
