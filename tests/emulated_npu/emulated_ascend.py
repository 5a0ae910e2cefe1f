"""EMULATED CANN, the parts both emulated adapters share (npu_device for TF2, npu_bridge for TF 1.15):
HCCL's transport, the device map and HCCL's device check, the rank size rule, the chip profile and
the injected overflows of the float status register.

HCCL transport: real collectives between the ranks' processes over loopback TCP.

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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

_AUTH = b"emulated-hccl"
REDUCTIONS = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}


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
        if op in REDUCTIONS:
            result = [REDUCTIONS[op]([entry[r][1][i] for r in range(self.size)], axis=0).astype(a.dtype)
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


def rank() -> int:
    """This process's rank as the emulated HCCL numbered it (0 before any connection: one rank)."""
    return _client[0].rank if _client else 0


# ---- the rules of CANN both adapters follow ------------------------------------------------------

BF16_MODES = ("allow_mix_precision_bf16", "allow_fp32_to_bf16")
PRECISION_MODES = ("force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype",
                   "allow_mix_precision", "cube_fp16in_fp32out", "allow_mix_precision_fp16") + BF16_MODES
CHIPS_WITHOUT_BF16 = ("910A",)


def chip() -> str:
    return os.environ.get("EMULATED_NPU_CHIP", "910A")


def get_ranksize() -> str:
    """Both adapters' rule (npu/util.py get_ranksize; npu_device.py): RANK_SIZE, else CM_WORKER_SIZE."""
    if os.getenv("CM_WORKER_SIZE") is not None and os.getenv("RANK_SIZE") is not None:
        raise ValueError("RANK_SIZE and CM_WORK_SIZE cannot be configured at the same time")
    return os.getenv("RANK_SIZE") if os.getenv("RANK_SIZE") is not None else os.getenv("CM_WORKER_SIZE", "1")


def _device_list(text: str) -> List[int]:
    ids: List[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        ids.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return sorted(set(ids))


def physical_device(logical: int, environ=os.environ) -> int:
    visible = environ.get("ASCEND_VISIBLE_DEVICES")
    devices = _device_list(visible) if visible else _device_list(environ.get("EMULATED_NPU_DEVICES", "0-7"))
    if not 0 <= logical < len(devices):
        where = f"ASCEND_VISIBLE_DEVICES={visible}" if visible else f"this host has devices {devices}"
        raise RuntimeError(f"Failed open npu device {logical} : logical device {logical} does not exist "
                           f"({where})")
    return devices[logical] if visible else logical


def hccl_device_check(physical: int, environ=os.environ) -> None:
    """HCCL's check at communicator set-up: the table's device for RANK_ID is the device we opened."""
    path, rank_id = environ["RANK_TABLE_FILE"], int(environ["RANK_ID"])
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    for server in table["server_list"]:
        for device in server["device"]:
            if int(device["rank_id"]) == rank_id:
                if int(device["device_id"]) != physical:
                    raise RuntimeError(
                        f"Failed open npu device : EI0004: The ranktable is invalid,Reason:[The ranktable "
                        f"config devId is inconsistent with the local devId.] ranktable config "
                        f"devId[{device['device_id']}],but local devId[{physical}] (rank {rank_id}, {path})")
                return
    raise RuntimeError(f"Failed open npu device : rank {rank_id} is not in {path}")


_overflow_lock = threading.Lock()
_status_reads = [0]


def injected_overflow() -> bool:
    """CPU float32 never saturates, so the float status register is set only by injection:
    EMULATED_NPU_OVERFLOW_AT lists the 1-based reads of the register that see an overflow, on the
    ranks in EMULATED_NPU_OVERFLOW_RANKS (default: every rank; ranks as HCCL numbered them)."""
    at = {int(x) for x in os.environ.get("EMULATED_NPU_OVERFLOW_AT", "").split(",") if x.strip()}
    ranks = os.environ.get("EMULATED_NPU_OVERFLOW_RANKS")
    if ranks and str(rank()) not in ranks.split(","):
        return False
    with _overflow_lock:
        _status_reads[0] += 1
        return _status_reads[0] in at


_original_cast: List[Any] = []


def refuse_bfloat16() -> None:
    """The 910A has no bfloat16 kernels: an op asking for one fails (here: every cast to it)."""
    import tensorflow as tf

    if not _original_cast:
        _original_cast.append(tf.cast)
    original = _original_cast[0]

    def cast(x: Any, dtype: Any, name: Optional[str] = None) -> Any:
        if tf.as_dtype(dtype) == tf.bfloat16:
            raise TypeError(f"emulated Ascend {chip()}: no bfloat16 on this chip (cast to bfloat16 refused)")
        return original(x, dtype, name=name)

    tf.cast = cast
    tf.dtypes.cast = cast


def restore_cast() -> None:
    import tensorflow as tf

    if _original_cast:
        tf.cast = tf.dtypes.cast = _original_cast[0]
