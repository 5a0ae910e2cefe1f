"""EMULATED HCCL transport: real collectives between the ranks' processes over loopback TCP.

Rank 0 runs a hub on (its server's address in the rank table, EMULATED_HCCL_PORT). Every collective
call opens a connection, sends (op, key, sequence, arrays) and waits for the result. Calls are matched
across ranks by their key (operation and shapes) and their per-key sequence number, so two collectives
in flight at once (TensorFlow may run independent ops concurrently) cannot be paired with each other.
"""

from __future__ import annotations

import json
import os
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Dict, List, Sequence, Tuple

import numpy as np

_AUTH = b"emulated-hccl"


class _Hub:
    def __init__(self, address: Tuple[str, int], size: int):
        self.size = size
        self.listener = Listener(address, authkey=_AUTH)
        self.lock = threading.Lock()
        self.pending: Dict[tuple, Dict[int, Tuple[Connection, list]]] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn = self.listener.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        rank, op, key, seq, root, arrays = conn.recv()
        with self.lock:
            entry = self.pending.setdefault((op, key, seq), {})
            if op == "register":  # no rank yet: number the arrivals; the result is every identity
                rank = len(entry)
            entry[rank] = (conn, arrays)
            if len(entry) < self.size:
                return
            del self.pending[(op, key, seq)]
        if op == "sum":
            result = [np.sum([entry[r][1][i] for r in range(self.size)], axis=0).astype(a.dtype)
                      for i, a in enumerate(entry[0][1])]
        elif op == "register":
            result = [np.stack([entry[r][1][0] for r in range(self.size)])]
        else:  # broadcast
            result = entry[root][1]
        for c, _ in entry.values():
            c.send(result)
            c.close()


class _Client:
    def __init__(self, rank: int, size: int, address: Tuple[str, int], timeout_s: float):
        self.rank, self.size, self.address = rank, size, address
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.sequence: Dict[tuple, int] = {}

    def call(self, op: str, arrays: Sequence[np.ndarray], root: int = 0) -> List[np.ndarray]:
        key = tuple((a.shape, str(a.dtype)) for a in arrays)
        with self.lock:
            seq = self.sequence.get((op, key), 0)
            self.sequence[(op, key)] = seq + 1
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                conn = Client(self.address, authkey=_AUTH)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"emulated HCCL: no hub at {self.address} after {self.timeout_s} s "
                                       "(HCCL_CONNECT_TIMEOUT)") from None
                time.sleep(0.05)
        conn.send((self.rank, op, key, seq, root, list(arrays)))
        result = conn.recv()
        conn.close()
        return result


_client: List[_Client] = []


def connect(rank: int, size: int) -> None:
    with open(os.environ["RANK_TABLE_FILE"], encoding="utf-8") as f:
        table = json.load(f)
    host = next(s["server_id"] for s in table["server_list"]
                if any(int(d["rank_id"]) == 0 for d in s["device"]))
    if "EMULATED_HCCL_PORT" not in os.environ:
        raise RuntimeError("emulated HCCL: set EMULATED_HCCL_PORT (the test's free port) for RANK_SIZE > 1")
    address = (host, int(os.environ["EMULATED_HCCL_PORT"]))
    if rank == 0:
        _Hub(address, size)
    _client.append(_Client(rank, size, address, float(os.environ.get("HCCL_CONNECT_TIMEOUT", "120"))))


def connect_cm(size: int, worker_ip: str, device: int) -> int:
    """The rank-table-free start: the chief's device hosts the hub on (CM_CHIEF_IP, CM_CHIEF_PORT) and
    numbers the devices that register, in (address, device) order; returns this device's rank."""
    chief = (os.environ["CM_CHIEF_IP"], int(os.environ["CM_CHIEF_PORT"]))
    if worker_ip == chief[0] and device == int(os.environ["CM_CHIEF_DEVICE"]):
        _Hub(chief, size)
    client = _Client(-1, size, chief, float(os.environ.get("HCCL_CONNECT_TIMEOUT", "120")))
    me = (tuple(int(p) for p in worker_ip.split(".")), device)
    (everyone,) = client.call("register", [np.array(me[0] + (device,), np.int64)])
    order = sorted((tuple(int(v) for v in row[:-1]), int(row[-1])) for row in everyone)
    client.rank = order.index(me)
    _client.append(client)
    return client.rank


def call(op: str, arrays: Sequence[np.ndarray], root: int = 0) -> List[np.ndarray]:
    return _client[0].call(op, arrays, root)
