"""HCCL rank tables: parse, validate, wait for, generate, merge and write them.

A rank table (``RANK_TABLE_FILE``) tells HCCL which servers and devices take part in a
job and which rank drives each device. See ``python -m rank_table --help`` for the
command line and :mod:`rank_table.parse` for the validation rules and the unknown-keys
policy.
"""

from .build import generate, local_table, merge, node_table
from .errors import RankTableError, RankTableNotReady
from .files import load, wait_until_completed, write
from .hccn import parse_hccn_conf, parse_hccn_tool_ip
from .model import Device, RankTable, Server, SuperPod
from .parse import parse

__all__ = [
    "Device",
    "RankTable",
    "RankTableError",
    "RankTableNotReady",
    "Server",
    "SuperPod",
    "generate",
    "load",
    "local_table",
    "node_table",
    "merge",
    "parse",
    "parse_hccn_conf",
    "parse_hccn_tool_ip",
    "wait_until_completed",
    "write",
]
