"""Tests for launcher.env (one rank's environment), launcher.horovod_rendezvous (HOROVOD_* from the
rank table, cross ranks) and launcher.progress (the job-wide progress line).

Pure functions, table-tested: no process is started.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from common.schema import build
from job.spec import JobSpec
from launcher import horovod_rendezvous
from launcher.env import SCRUBBED, job_env_keys, rank_env
from launcher.progress import ProgressBoard
from launcher.slots import Slot, assign_slots
from rank_table import RankTable, local_table, parse

# What a launcher may inherit from a pod or a shell that must never reach a rank as is.
POLLUTED = {
    "POD_NAME": "csgm-worker-0",
    "CM_CHIEF_IP": "10.0.0.9",
    "CM_CHIEF_PORT": "29000",
    "CM_CHIEF_DEVICE": "0",
    "CM_WORKER_SIZE": "8",
    "CM_WORKER_IP": "10.0.0.9",
    "RANK_ID": "99",
    "RANK_SIZE": "99",
    "DEVICE_ID": "99",
    "ASCEND_DEVICE_ID": "99",
    "TF_CONFIG": '{"cluster": {}}',
    "HOROVOD_RANK": "99",
    "HOROVOD_SIZE": "99",
    "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.9.9.9",
    "HOROVOD_SOMETHING_ELSE": "1",
}
KEPT = {"PATH": "/usr/bin:/bin", "HOME": "/home/user", "MY_SETTING": "kept", "LD_LIBRARY_PATH": "/opt/x"}
HOROVOD_KEYS = ("HOROVOD_HOSTNAME", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE",
                "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE", "HOROVOD_GLOO_RENDEZVOUS_ADDR",
                "HOROVOD_GLOO_RENDEZVOUS_PORT", "HOROVOD_CONTROLLER", "HOROVOD_CPU_OPERATIONS",
                "HOROVOD_GLOO_IFACE", "HOROVOD_GLOO_TIMEOUT_SECONDS")


def _table(servers: Sequence[Tuple[str, Sequence[int]]]) -> RankTable:
    """A v1.0 table: (server_id, physical device ids) per server, ranks in order."""
    server_list = []
    rank = 0
    for server_id, device_ids in servers:
        devices = []
        for d in device_ids:
            devices.append({"device_id": str(d), "device_ip": f"192.168.1.{100 + rank}", "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": server_id, "device": devices})
    return parse({"version": "1.0", "status": "completed", "server_count": str(len(servers)),
                  "server_list": server_list}, "<test table>")


def _spec(**sections: Any) -> JobSpec:
    return build(JobSpec, dict(sections), "test")


def _envs(spec: JobSpec, table: RankTable, server_id: str, base: Dict[str, str],
          table_file: Path = Path("/jobs/hccl.json"), spec_file: Path = Path("/jobs/run/spec.yaml"),
          job_id: str = "job-42") -> List[Dict[str, str]]:
    slots = assign_slots(table, server_id, spec.devices.count)
    return [rank_env(s, spec, base, table, table_file, spec_file, job_id) for s in slots]


# --- NPU -------------------------------------------------------------------------------------------

# The second half of an 8-NPU server, listed out of order: physical ids 4,5,7,6. npu_device.open()
# opens logical ASCEND_DEVICE_ID; on bare metal logical = physical, in a container with
# ASCEND_VISIBLE_DEVICES=4,5,6,7 the runtime numbers them 0..3 in ascending physical order.
NPU_TABLE = _table([("10.0.0.1", [4, 5, 7, 6]), ("10.0.0.2", [4, 5, 7, 6])])
NPU_SPEC = _spec(backend="hccl", devices={"type": "npu", "count": 4},
                 hccl={"connect_timeout_s": 600, "exec_timeout_s": 900})
CONTAINER = {"ASCEND_VISIBLE_DEVICES": "4,5,6,7"}


def test_npu_device_not_visible_is_refused() -> None:
    with pytest.raises(ValueError, match=r"the rank table names device 7, but this container sees only "
                                         r"ASCEND_VISIBLE_DEVICES=4,5,6\. Give the container"):
        _envs(NPU_SPEC, NPU_TABLE, "10.0.0.1", dict(KEPT, ASCEND_VISIBLE_DEVICES="4,5,6"))


@pytest.mark.parametrize("server_id, base, expected", [
    # server, [(RANK_ID, DEVICE_ID, ASCEND_DEVICE_ID, CROSS_RANK)]
    ("10.0.0.1", {}, [(0, 4, 4, 0), (1, 5, 5, 0), (2, 7, 7, 0), (3, 6, 6, 0)]),
    ("10.0.0.2", {}, [(4, 4, 4, 1), (5, 5, 5, 1), (6, 7, 7, 1), (7, 6, 6, 1)]),
    ("10.0.0.1", CONTAINER, [(0, 0, 0, 0), (1, 1, 1, 0), (2, 3, 3, 0), (3, 2, 2, 0)]),
    ("10.0.0.2", {"ASCEND_VISIBLE_DEVICES": "7,6,5,4"}, [(4, 0, 0, 1), (5, 1, 1, 1), (6, 3, 3, 1), (7, 2, 2, 1)]),
])
def test_npu_rank_variables(server_id: str, base: Dict[str, str], expected: List[Tuple[int, int, int, int]]) -> None:
    envs = _envs(NPU_SPEC, NPU_TABLE, server_id, dict(KEPT, **base))
    assert [(int(e["RANK_ID"]), int(e["DEVICE_ID"]), int(e["ASCEND_DEVICE_ID"]), int(e["CROSS_RANK"]))
            for e in envs] == expected
    for local, env in enumerate(envs):
        assert env["RANK_SIZE"] == "8"
        assert env["LOCAL_RANK"] == str(local)
        assert env["LOCAL_SIZE"] == "4"
        assert env["CROSS_SIZE"] == "2"
        assert env["JOB_ID"] == "job-42"
        assert env["HCCL_CONNECT_TIMEOUT"] == "600"
        assert env["HCCL_EXEC_TIMEOUT"] == "900"
        assert env["RANK_TABLE_FILE"] == "/jobs/hccl.json"
        assert env["CSGM_SPEC_FILE"] == "/jobs/run/spec.yaml"
        assert env["CSGM_PORT"] == "29500"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert "CUDA_VISIBLE_DEVICES" not in env
        assert not any(k in env for k in HOROVOD_KEYS)  # identity: never inherited


def test_npu_hccl_timeouts_default_from_spec() -> None:
    spec = _spec(backend="hccl", devices={"type": "npu", "count": 4})
    env = _envs(spec, NPU_TABLE, "10.0.0.1", {"HCCL_CONNECT_TIMEOUT": "5", "HCCL_EXEC_TIMEOUT": "5"})[0]
    assert (env["HCCL_CONNECT_TIMEOUT"], env["HCCL_EXEC_TIMEOUT"]) == ("120", "1800")


def test_rank_table_and_spec_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = _envs(NPU_SPEC, NPU_TABLE, "10.0.0.1", {}, table_file=Path("configs/hccl.json"),
                spec_file=Path("runs/job/spec.yaml"))[0]
    assert os.path.isabs(env["RANK_TABLE_FILE"])
    assert env["RANK_TABLE_FILE"] == str((tmp_path / "configs" / "hccl.json").resolve())
    assert env["CSGM_SPEC_FILE"] == str((tmp_path / "runs" / "job" / "spec.yaml").resolve())


@pytest.mark.parametrize("kind, backend", [("npu", "hccl"), ("gpu", "tf"), ("cpu", "tf"), ("cpu", "local")])
def test_inherited_variables_are_scrubbed(kind: str, backend: str) -> None:
    spec = _spec(backend=backend, devices={"type": kind, "count": 4})
    for env in _envs(spec, NPU_TABLE, "10.0.0.2", {**POLLUTED, **KEPT}):
        for key in ("POD_NAME", "CM_CHIEF_IP", "CM_CHIEF_PORT", "CM_CHIEF_DEVICE", "CM_WORKER_SIZE",
                    "CM_WORKER_IP", "TF_CONFIG"):
            assert key not in env, key
        assert not any(k in env for k in HOROVOD_KEYS)  # identity: never inherited
        # the rank's own values, not the inherited 99s
        assert env["RANK_ID"] != "99" and env["RANK_SIZE"] == "8"
        if kind == "npu":
            assert env["DEVICE_ID"] != "99" and env["ASCEND_DEVICE_ID"] != "99"
        else:
            assert "DEVICE_ID" not in env and "ASCEND_DEVICE_ID" not in env
        for key, value in KEPT.items():
            assert env[key] == value


def test_scrub_list_covers_the_documented_variables() -> None:
    assert {"POD_NAME", "CM_CHIEF_IP", "CM_CHIEF_PORT", "CM_CHIEF_DEVICE", "CM_WORKER_SIZE", "CM_WORKER_IP",
            "RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID", "TF_CONFIG"} <= set(SCRUBBED)


def test_rank_env_does_not_modify_base() -> None:
    base = {**POLLUTED, **KEPT}
    before = dict(base)
    _envs(NPU_SPEC, NPU_TABLE, "10.0.0.1", base)
    assert base == before


# --- GPU and CPU ------------------------------------------------------------------------------------

def test_gpu_ids_beyond_the_launchers_gpus() -> None:
    spec = _spec(backend="tf", devices={"type": "gpu", "count": 4})
    with pytest.raises(ValueError, match=r"^rank 0 is on GPU 4, but the launcher may use only 2 GPU\(s\) "
                                         r"\(CUDA_VISIBLE_DEVICES=2,3\)\. Lower devices.count"):
        _envs(spec, NPU_TABLE, "10.0.0.1", dict(KEPT, CUDA_VISIBLE_DEVICES="2,3"))


@pytest.mark.parametrize("kind, inherited, expected", [
    ("gpu", None, ["4", "5", "6", "7"]),         # the physical id from the table
    ("gpu", "0,1,2,3,4,5,6,7", ["4", "5", "6", "7"]),
    ("gpu", "7,6,5,4,3,2,1,0", ["3", "2", "1", "0"]),  # ids count within the launcher's own list
    ("gpu", "", ["4", "5", "6", "7"]),
    ("cpu", None, ["", "", "", ""]),             # a CPU rank sees no GPU
    ("cpu", "0", ["", "", "", ""]),
])
def test_cuda_visible_devices(kind: str, inherited: Optional[str], expected: List[str]) -> None:
    base = dict(KEPT)
    if inherited is not None:
        base["CUDA_VISIBLE_DEVICES"] = inherited
    spec = _spec(backend="tf", devices={"type": kind, "count": 4})
    envs = _envs(spec, _table([("10.0.0.1", [4, 5, 6, 7])]), "10.0.0.1", base)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == expected
    for env in envs:
        assert "HCCL_CONNECT_TIMEOUT" not in env and "HCCL_EXEC_TIMEOUT" not in env
        assert env["RANK_TABLE_FILE"] == "/jobs/hccl.json"  # every kind gets the table (loopback on CPU)


def test_cpu_loopback_table_single_server() -> None:
    spec = _spec(devices={"type": "cpu", "count": 3}, launch={"port": 31000})
    envs = _envs(spec, local_table(3), "127.0.0.1", {})
    assert [(e["RANK_ID"], e["LOCAL_RANK"], e["RANK_SIZE"], e["LOCAL_SIZE"], e["CROSS_RANK"], e["CROSS_SIZE"])
            for e in envs] == [("0", "0", "3", "3", "0", "1"), ("1", "1", "3", "3", "0", "1"),
                               ("2", "2", "3", "3", "0", "1")]
    assert {e["CSGM_PORT"] for e in envs} == {"31000"}


# --- Horovod ---------------------------------------------------------------------------------------

LOOPBACK_2X2 = local_table(4, n_servers=2, first_ip="127.0.0.2")


@pytest.mark.parametrize("server_id, ranks, cross_rank", [("127.0.0.2", ["0", "1"], "0"),
                                                          ("127.0.0.3", ["2", "3"], "1")])
def test_horovod_variables(server_id: str, ranks: List[str], cross_rank: str) -> None:
    spec = _spec(backend="horovod", devices={"type": "cpu", "count": 2},
                 launch={"port": 31234, "collective_timeout_s": 90.5})
    envs = _envs(spec, LOOPBACK_2X2, server_id, {**POLLUTED, **KEPT})
    for local, (env, rank) in enumerate(zip(envs, ranks)):
        expected = {
            "HOROVOD_HOSTNAME": server_id,
            "HOROVOD_RANK": rank,
            "HOROVOD_SIZE": "4",
            "HOROVOD_LOCAL_RANK": str(local),
            "HOROVOD_LOCAL_SIZE": "2",
            "HOROVOD_CROSS_RANK": cross_rank,
            "HOROVOD_CROSS_SIZE": "2",
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.2",  # the first server's id
            "HOROVOD_GLOO_RENDEZVOUS_PORT": "31234",      # launch.port
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_CPU_OPERATIONS": "gloo",
            "HOROVOD_GLOO_IFACE": "lo",                   # loopback server ids
            "HOROVOD_GLOO_TIMEOUT_SECONDS": "90",
        }
        assert {k: v for k, v in env.items() if k in HOROVOD_KEYS} == expected
        assert env["RANK_ID"] == rank and env["CROSS_RANK"] == cross_rank
        assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_horovod_variables_uneven_servers() -> None:
    table = _table([("127.0.0.1", range(8)), ("127.0.0.2", range(4))])
    spec = _spec(backend="horovod", devices={"type": "cpu", "count": 8})
    envs = _envs(spec, table, "127.0.0.1", {})
    assert [(e["HOROVOD_CROSS_RANK"], e["HOROVOD_CROSS_SIZE"]) for e in envs] == [("0", "2")] * 4 + [("0", "1")] * 4
    assert {e["HOROVOD_SIZE"] for e in envs} == {"12"}
    spec4 = _spec(backend="horovod", devices={"type": "cpu", "count": 4})
    envs = _envs(spec4, table, "127.0.0.2", {})
    assert [e["HOROVOD_RANK"] for e in envs] == ["8", "9", "10", "11"]
    assert [(e["HOROVOD_CROSS_RANK"], e["HOROVOD_CROSS_SIZE"]) for e in envs] == [("1", "2")] * 4


def test_horovod_unknown_server_address_is_an_error_naming_server_id() -> None:
    table = _table([("10.255.0.1", [0, 1])])  # TEST address not carried by any interface here
    spec = _spec(backend="horovod", devices={"type": "cpu", "count": 2})
    with pytest.raises(ValueError, match=r"no network interface of this host carries 10\.255\.0\.1.*--server-id"):
        _envs(spec, table, "10.255.0.1", {})


# 8 + 4 devices: local ranks 4..7 exist only on server 0.
UNEVEN = _table([("10.0.0.1", range(8)), ("10.0.0.2", range(4))])
UNEVEN_3 = _table([("10.0.0.1", range(2)), ("10.0.0.2", range(4)), ("10.0.0.3", range(2))])


@pytest.mark.parametrize("table, server_index, local_rank, expected", [
    (UNEVEN, 0, 0, (0, 2)),
    (UNEVEN, 1, 0, (1, 2)),
    (UNEVEN, 0, 3, (0, 2)),
    (UNEVEN, 1, 3, (1, 2)),
    (UNEVEN, 0, 4, (0, 1)),
    (UNEVEN, 0, 5, (0, 1)),  # local rank 5 only on server 0: cross size 1
    (UNEVEN, 0, 7, (0, 1)),
    (UNEVEN_3, 0, 1, (0, 3)),
    (UNEVEN_3, 2, 1, (2, 3)),
    (UNEVEN_3, 1, 2, (0, 1)),  # only the middle server has local rank 2
    (UNEVEN_3, 1, 3, (0, 1)),
    (local_table(1), 0, 0, (0, 1)),
])
def test_cross_ranks(table: RankTable, server_index: int, local_rank: int, expected: Tuple[int, int]) -> None:
    assert horovod_rendezvous.cross_ranks(table, server_index, local_rank) == expected


def test_host_alloc_plan_agrees_with_rank_env() -> None:
    pytest.importorskip("horovod.runner.common.util.hosts")
    table = _table([("127.0.0.1", range(4)), ("127.0.0.2", range(2))])
    plan = horovod_rendezvous.host_alloc_plan(table)
    assert [p.rank for p in plan] == list(range(6))
    for index, server in enumerate(table.servers):
        for local, device in enumerate(server.devices):
            env = horovod_rendezvous.rank_env(table, index, local, device.rank_id, 29500, 60)
            slot = plan[device.rank_id]
            assert (slot.hostname, slot.local_rank, slot.cross_rank, slot.size, slot.local_size,
                    slot.cross_size) == (env["HOROVOD_HOSTNAME"], int(env["HOROVOD_LOCAL_RANK"]),
                                         int(env["HOROVOD_CROSS_RANK"]), int(env["HOROVOD_SIZE"]),
                                         int(env["HOROVOD_LOCAL_SIZE"]), int(env["HOROVOD_CROSS_SIZE"]))


@pytest.mark.parametrize("address, iface", [("127.0.0.1", "lo"), ("127.0.0.3", "lo"), ("::1", "lo")])
def test_interface_of_loopback(address: str, iface: str) -> None:
    assert horovod_rendezvous.interface_of(address) == iface


@pytest.mark.parametrize("slots, expected", [([0, 1], True), ([2, 3], False), ([1, 0], True)])
def test_needs_rendezvous_on_the_server_of_rank_0(slots: List[int], expected: bool) -> None:
    records = [Slot(rank=r, local_rank=i, world_size=4, local_world_size=2, server_index=0, server_count=2,
                    server_id="s", device_id=i, device_ip="1.2.3.4") for i, r in enumerate(slots)]
    assert horovod_rendezvous.needs_rendezvous(records) is expected


# --- dry-run listing ------------------------------------------------------------------------------

def test_job_env_keys_lists_only_what_changed() -> None:
    base = {"PATH": "/bin", "RANK_SIZE": "8", "JOB_ID": "old"}
    env = {"PATH": "/bin", "RANK_SIZE": "8", "JOB_ID": "new", "RANK_ID": "3"}
    assert job_env_keys(env, base) == {"JOB_ID": "new", "RANK_ID": "3"}
    assert list(job_env_keys({"B": "1", "A": "2"}, {})) == ["A", "B"]


# --- ProgressBoard --------------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _board(every_s: float = 5.0) -> Tuple[ProgressBoard, FakeClock, List[str]]:
    clock, out = FakeClock(), []
    return ProgressBoard(out.append, every_s=every_s, clock=clock), clock, out


def _unit(done: int, total: int) -> str:
    return f"12:00:00 recovery: unit {done}/{total} done (gaussian-m010/vae/b000), 3 s elapsed, about 9 s left"


def test_board_ignores_other_lines() -> None:
    board, clock, out = _board()
    for line in ("epoch 3: loss 12.5", "recovery: 20 units in all, 10 on this rank", "recovery: unit x/y done", ""):
        board.on_line(0, line)
    assert out == [] and board.units == {}


def test_board_first_unit_line_is_shown_and_sums_ranks() -> None:
    board, clock, out = _board()
    board.on_line(0, _unit(1, 10))
    assert out == ["launcher: recovery 1/10 units done on 1 rank(s), 0 s elapsed, about 0 s left"]
    clock.now += 5
    board.on_line(1, _unit(2, 12))
    assert out[-1].startswith("launcher: recovery 3/22 units done on 2 rank(s), 5 s elapsed")


def test_board_keeps_only_each_ranks_latest_count() -> None:
    board, clock, out = _board(every_s=0)
    board.on_line(0, _unit(1, 10))
    board.on_line(0, _unit(2, 10))
    board.on_line(1, _unit(1, 10))
    board.on_line(0, _unit(3, 10))
    assert board.units == {0: (3, 10), 1: (1, 10)}
    assert "recovery 4/20 units" in out[-1]


def test_board_throttles_to_every_s() -> None:
    board, clock, out = _board(every_s=5.0)
    board.on_line(0, _unit(1, 10))          # t=100: shown
    clock.now = 102.0
    board.on_line(1, _unit(1, 10))          # 2 s later: held back
    clock.now = 104.999
    board.on_line(0, _unit(2, 10))          # still within 5 s: held back
    assert len(out) == 1
    clock.now = 105.0
    board.on_line(1, _unit(2, 10))          # 5 s after the last shown line: shown, with the latest sums
    assert len(out) == 2 and "recovery 4/20 units done on 2 rank(s), 5 s elapsed" in out[1]
    clock.now = 106.0
    board.on_line(1, _unit(3, 10))          # the window restarts at the last shown line
    assert len(out) == 2
    clock.now = 110.0
    board.on_line(0, _unit(3, 10))
    assert len(out) == 3 and "recovery 6/20" in out[2]


def test_board_always_shows_completion() -> None:
    board, clock, out = _board(every_s=60.0)
    board.on_line(0, _unit(1, 2))
    clock.now += 1
    board.on_line(1, _unit(1, 2))
    board.on_line(0, _unit(2, 2))
    assert len(out) == 1                     # throttled
    clock.now += 1
    board.on_line(1, _unit(2, 2))            # everything done: shown at once
    assert len(out) == 2
    assert out[1] == "launcher: recovery 4/4 units done on 2 rank(s), 2 s elapsed, about 0 s left"


@pytest.mark.parametrize("steps, expected", [
    # (seconds after the first unit line, rank, done, total) ... -> last line's elapsed and time left.
    # ETA = elapsed / done * (total - done), elapsed counted from the first unit line.
    ([(0, 0, 1, 10), (30, 0, 3, 10)], "30 s elapsed, about 70 s left"),
    ([(0, 0, 1, 10), (0, 1, 1, 10), (40, 1, 4, 10), (40, 0, 4, 10)], "40 s elapsed, about 60 s left"),
    ([(0, 0, 2, 8), (12, 0, 6, 8)], "12 s elapsed, about 4 s left"),
    ([(0, 0, 1, 3), (100, 0, 3, 3)], "100 s elapsed, about 0 s left"),
])
def test_board_eta(steps: List[Tuple[float, int, int, int]], expected: str) -> None:
    board, clock, out = _board(every_s=0.0)
    start = clock.now
    for at, rank, done, total in steps:
        clock.now = start + at
        board.on_line(rank, _unit(done, total))
    assert out[-1].endswith(expected)


def test_horovod_tuning_variables_pass_through() -> None:
    spec = _spec(backend="horovod", devices={"type": "cpu", "count": 2})
    base = {"HOROVOD_FUSION_THRESHOLD": "1048576", "HOROVOD_RANK": "99"}
    env = _envs(spec, local_table(2), "127.0.0.1", base)[0]
    assert env["HOROVOD_FUSION_THRESHOLD"] == "1048576" and env["HOROVOD_RANK"] == "0"
