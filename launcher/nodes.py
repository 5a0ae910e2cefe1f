"""Several nodes without a rank table, as torchrun starts them: ``--nnodes --node-rank --master-addr
--master-port`` (or MASTER_ADDR / MASTER_PORT), for the ``tf`` and ``horovod`` backends.

Node 0 listens on the master's address; every other node connects, says who it is (node rank, its
address, its rank count) and waits. Once all ``nnodes`` have arrived node 0 sends everyone the list,
and each launcher builds the same rank table from it (rank_table.node_table: ranks in node order,
as torchrun counts them) and goes on exactly as with a table. A node that never arrives is an error on
node 0 after ``launch.rank_table_timeout_s`` naming the missing node ranks, sent to the nodes that
did arrive too. The default port 29400 is torchrun's rendezvous port; it must differ from
``launch.port`` (the collectives'). NPUs do not start this way: HCCL needs a rank table or CM_*.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from launcher.errors import LaunchError

DEFAULT_PORT = 29400
_LINE = 4096  # a hello or an answer is one short JSON line


@dataclass(frozen=True)
class Nodes:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    local_addr: Optional[str] = None  # the address this node's ranks are reached at (default: as seen)

    def describe(self) -> str:
        return (f"node {self.node_rank} of {self.nnodes}, master {self.master_addr}:{self.master_port} "
                "(torchrun-style, no rank table)")


def rendezvous(nodes: Nodes, job: str, count: int, timeout_s: float,
               report: Callable[[str], None] = lambda line: None) -> List[Tuple[str, int]]:
    """(address, rank count) of every node, in node-rank order; the same list on every node."""
    if nodes.node_rank == 0:
        return _master(nodes, job, count, timeout_s, report)
    return _member(nodes, job, count, timeout_s, report)


def _master(nodes: Nodes, job: str, count: int, timeout_s: float,
            report: Callable[[str], None]) -> List[Tuple[str, int]]:
    server = socket.socket(socket.AF_INET6 if ":" in nodes.master_addr else socket.AF_INET)
    try:  # (socket.create_server is Python 3.8+; a rank host may run 3.7)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((nodes.master_addr, nodes.master_port))
        server.listen(64)
    except OSError as e:
        server.close()
        raise LaunchError(f"--master-addr {nodes.master_addr} --master-port {nodes.master_port}: cannot listen "
                          f"there ({e.strerror or e}). Give node 0 an address of its own and a free port") from None
    arrived: Dict[int, Tuple[str, int]] = {0: (nodes.local_addr or nodes.master_addr, count)}
    waiting: Dict[int, socket.socket] = {}
    deadline = time.monotonic() + timeout_s
    report(f"rendezvous: node 0 waiting on {nodes.master_addr}:{nodes.master_port} for {nodes.nnodes - 1} node(s)")
    try:
        while len(arrived) < nodes.nnodes:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(nodes.nnodes)) - set(arrived))
                message = (f"--nnodes {nodes.nnodes}: node rank(s) {', '.join(map(str, missing))} did not reach the "
                           f"master {nodes.master_addr}:{nodes.master_port} within {timeout_s:g} s (arrived: "
                           f"{', '.join(map(str, sorted(arrived)))}). Start the launcher on every node with its own "
                           "--node-rank, or raise launch.rank_table_timeout_s")
                for conn in waiting.values():
                    _send(conn, {"error": message})
                raise LaunchError(message)
            server.settimeout(left)
            try:
                conn, peer = server.accept()
            except socket.timeout:
                continue
            hello = _receive(conn, 10.0)
            problem = _check(hello, nodes, job, arrived)
            if problem:
                _send(conn, {"error": problem})
                conn.close()
                report(f"rendezvous: refused {peer[0]}: {problem}")
                continue
            rank, addr = int(hello["node_rank"]), str(hello.get("addr") or peer[0])
            if any(addr == a for a, _ in arrived.values()):
                _send(conn, {"error": f"--node-rank {rank}: address {addr} is another node's already (the ranks "
                                      "find each other by address): give each node its own --local-addr"})
                conn.close()
                continue
            arrived[rank] = (addr, int(hello["count"]))
            waiting[rank] = conn
            report(f"rendezvous: node {rank} arrived from {arrived[rank][0]} ({arrived[rank][1]} ranks)")
        everyone = [arrived[r] for r in range(nodes.nnodes)]
        for conn in waiting.values():
            _send(conn, {"nodes": everyone})
        return everyone
    finally:
        for conn in waiting.values():
            conn.close()
        server.close()


def _check(hello: Optional[dict], nodes: Nodes, job: str, arrived: Dict[int, Tuple[str, int]]) -> Optional[str]:
    if not isinstance(hello, dict) or not isinstance(hello.get("node_rank"), int):
        return "not a launcher of this project (no hello)"
    if hello.get("job") != job or hello.get("nnodes") != nodes.nnodes:
        return (f"node {hello['node_rank']} runs job {hello.get('job')!r} with --nnodes {hello.get('nnodes')}, "
                f"node 0 runs {job!r} with --nnodes {nodes.nnodes}: give every node the same spec and --nnodes")
    if not 0 < hello["node_rank"] < nodes.nnodes or hello["node_rank"] in arrived:
        return (f"--node-rank {hello['node_rank']} is taken or outside 1..{nodes.nnodes - 1}: give every node its own "
                "--node-rank")
    return None


def _member(nodes: Nodes, job: str, count: int, timeout_s: float,
            report: Callable[[str], None]) -> List[Tuple[str, int]]:
    deadline = time.monotonic() + timeout_s
    source = (nodes.local_addr, 0) if nodes.local_addr else None
    while True:
        try:
            conn = socket.create_connection((nodes.master_addr, nodes.master_port), timeout=5.0,
                                            source_address=source)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"--node-rank {nodes.node_rank}: the master {nodes.master_addr}:{nodes.master_port} (node rank 0) "
                    f"did not answer within {timeout_s:g} s ({e.strerror or e}). Start node 0, check "
                    "--master-addr/--master-port, or raise launch.rank_table_timeout_s") from None
            time.sleep(0.5)
    with conn:
        _send(conn, {"node_rank": nodes.node_rank, "nnodes": nodes.nnodes, "job": job, "count": count,
                     "addr": nodes.local_addr or conn.getsockname()[0]})
        report(f"rendezvous: node {nodes.node_rank} registered with {nodes.master_addr}:{nodes.master_port}")
        # Node 0 answers at its own deadline at the latest; it may have started later than this node.
        answer = _receive(conn, max(deadline - time.monotonic(), 0) + timeout_s + 10)
    if not isinstance(answer, dict):
        raise LaunchError(f"--node-rank {nodes.node_rank}: no answer from the master {nodes.master_addr}:"
                          f"{nodes.master_port} (it stopped, or is not this project's launcher)")
    if "error" in answer:
        raise LaunchError(str(answer["error"]))
    return [(str(addr), int(n)) for addr, n in answer["nodes"]]


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # that node is gone; it will say so itself


def _receive(conn: socket.socket, timeout_s: float) -> Optional[dict]:
    conn.settimeout(timeout_s)
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < _LINE:
            chunk = conn.recv(_LINE)
            if not chunk:
                break
            data += chunk
        value = json.loads(data.decode() or "null")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
