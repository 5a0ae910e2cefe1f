"""Tests for csgm.backends.hccl.check_environment: the HCCL variables checked against their rank table.

CANN's adapter silently trains every rank alone when these are wrong, so each mistake must be a
refusal whose message names the variable and the fix. Pure; no NPU needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import pytest

from csgm.backends.hccl import HcclEnvironmentError, check_environment

# Two servers; physical device ids differ from the ranks so DEVICE_ID checks mean something.
TABLE = {
    "version": "1.0", "status": "completed", "server_count": "2",
    "server_list": [
        {"server_id": "10.0.0.1", "device": [
            {"device_id": "4", "device_ip": "192.168.1.4", "rank_id": "0"},
            {"device_id": "5", "device_ip": "192.168.1.5", "rank_id": "1"}]},
        {"server_id": "10.0.0.2", "device": [
            {"device_id": "0", "device_ip": "192.168.2.0", "rank_id": "2"},
            {"device_id": "1", "device_ip": "192.168.2.1", "rank_id": "3"}]},
    ],
}


@pytest.fixture()
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(TABLE), encoding="utf-8")
    return path


def _env(table_file: Path, rank: str = "1", size: str = "4", device: Optional[str] = None,
         **extra: str) -> Dict[str, str]:
    env = {"RANK_TABLE_FILE": str(table_file), "RANK_ID": rank, "RANK_SIZE": size, "PATH": "/bin"}
    if device is not None:
        env["DEVICE_ID"] = device
    env.update(extra)
    return env


@pytest.mark.parametrize("rank, device", [
    ("0", None), ("1", None), ("2", None), ("3", None),   # DEVICE_ID unset: not checked
    ("0", "4"), ("1", "5"), ("2", "0"), ("3", "1"),       # DEVICE_ID from the table
])
def test_good_environment_returns_rank_and_size(table_file: Path, rank: str, device: Optional[str]) -> None:
    assert check_environment(_env(table_file, rank=rank, device=device)) == (int(rank), 4)


def test_one_rank_table(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"version": "1.0", "status": "completed", "server_count": "1", "server_list": [
        {"server_id": "s", "device": [{"device_id": "0", "device_ip": "1.2.3.4", "rank_id": "0"}]}]}))
    assert check_environment(_env(path, rank="0", size="1", device="0")) == (0, 1)


@pytest.mark.parametrize("remove, named", [
    (("RANK_TABLE_FILE",), "RANK_TABLE_FILE not set"),
    (("RANK_ID",), "RANK_ID not set"),
    (("RANK_SIZE",), "RANK_SIZE not set"),
    (("RANK_ID", "RANK_SIZE"), "RANK_ID, RANK_SIZE not set"),
    (("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE"), "RANK_TABLE_FILE, RANK_ID, RANK_SIZE not set"),
])
def test_missing_variables(table_file: Path, remove: tuple, named: str) -> None:
    env = _env(table_file)
    for key in remove:
        del env[key]
    with pytest.raises(HcclEnvironmentError, match=rf"^backend hccl: {named}\. .*python -m launcher"):
        check_environment(env)


@pytest.mark.parametrize("key", ["RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE"])
def test_empty_variable_counts_as_missing(table_file: Path, key: str) -> None:
    env = _env(table_file)
    env[key] = ""
    with pytest.raises(HcclEnvironmentError, match=rf"backend hccl: {key} not set"):
        check_environment(env)


@pytest.mark.parametrize("value", ["csgm-worker-0", ""])
def test_pod_name_set(table_file: Path, value: str) -> None:
    with pytest.raises(HcclEnvironmentError, match=r"backend hccl: POD_NAME is set.*legacy.*Unset it"):
        check_environment(_env(table_file, POD_NAME=value))


def test_table_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "hccl.json"
    with pytest.raises(HcclEnvironmentError, match=r"^backend hccl: .*hccl\.json: \$: file not found"):
        check_environment(_env(missing))


def test_table_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(HcclEnvironmentError, match=r"^backend hccl: .*is a directory"):
        check_environment(_env(tmp_path))


def test_table_not_json(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(HcclEnvironmentError, match=r"^backend hccl: .*hccl\.json: .*not valid JSON"):
        check_environment(_env(path))


def test_table_still_initializing(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    path.write_text('{"status": "initializing"}', encoding="utf-8")
    with pytest.raises(HcclEnvironmentError, match=r"^backend hccl: .*initializing"):
        check_environment(_env(path))


@pytest.mark.parametrize("size", ["2", "8", "0", "-4"])
def test_rank_size_mismatch(table_file: Path, size: str) -> None:
    with pytest.raises(HcclEnvironmentError,
                       match=rf"^backend hccl: RANK_SIZE={size} but .*hccl\.json has 4 ranks\. Set RANK_SIZE=4$"):
        check_environment(_env(table_file, rank="0", size=size))


@pytest.mark.parametrize("rank", ["4", "5", "-1"])
def test_rank_id_out_of_range(table_file: Path, rank: str) -> None:
    with pytest.raises(HcclEnvironmentError, match=rf"^backend hccl: RANK_ID={rank} is outside 0\.\.3$"):
        check_environment(_env(table_file, rank=rank))


@pytest.mark.parametrize("rank, size", [("one", "4"), ("1", "four"), ("1.0", "4"), ("0x1", "4"), ("1", "4.0")])
def test_non_integer(table_file: Path, rank: str, size: str) -> None:
    with pytest.raises(HcclEnvironmentError,
                       match=rf"^backend hccl: RANK_ID='{rank}' and RANK_SIZE='{size}' must be integers$"):
        check_environment(_env(table_file, rank=rank, size=size))


@pytest.mark.parametrize("rank, device, expected", [
    ("0", "0", "4"),    # the logical id instead of the physical one
    ("1", "1", "5"),
    ("2", "4", "0"),    # another server's device
    ("3", "7", "1"),
])
def test_device_id_mismatch(table_file: Path, rank: str, device: str, expected: str) -> None:
    with pytest.raises(HcclEnvironmentError,
                       match=rf"^backend hccl: DEVICE_ID={device} but .*hccl\.json gives rank {rank} device "
                             rf"{expected}\. Set DEVICE_ID={expected}$"):
        check_environment(_env(table_file, rank=rank, device=device))


@pytest.mark.parametrize("key, value", [("DEVICE_ID", ""), ("DEVICE_ID", "four"), ("ASCEND_DEVICE_ID", "0x1")])
def test_device_ids_must_be_integers(table_file: Path, key: str, value: str) -> None:
    with pytest.raises(HcclEnvironmentError, match=rf"^backend hccl: {key}='{value}' must be an integer$"):
        check_environment(_env(table_file, rank="0", **{key: value}))


@pytest.mark.parametrize("rank, device, logical", [("0", "04", "0"), ("1", "5", "1"), ("3", "1", "1"),
                                                   ("2", "0", "0")])
def test_device_ids_as_numbers(table_file: Path, rank: str, device: str, logical: str) -> None:
    """'04' is device 4; ASCEND_DEVICE_ID is any index among the server's devices."""
    assert check_environment(_env(table_file, rank=rank, device=device, ASCEND_DEVICE_ID=logical))[0] == int(rank)


@pytest.mark.parametrize("rank, logical", [("0", "2"), ("3", "5"), ("1", "-1")])
def test_logical_device_beyond_the_server(table_file: Path, rank: str, logical: str) -> None:
    with pytest.raises(HcclEnvironmentError,
                       match=rf"^backend hccl: ASCEND_DEVICE_ID={logical} but server 10\.0\.0\.[12] has 2 "
                             r"device\(s\) in .*hccl\.json\. Set it to the rank's index among them \(0\.\.1\)$"):
        check_environment(_env(table_file, rank=rank, ASCEND_DEVICE_ID=logical))


def test_checks_come_in_order(tmp_path: Path, table_file: Path) -> None:
    """Missing variables before POD_NAME, POD_NAME before reading the table, the table before
    the numbers: the first message is about the first thing to fix."""
    with pytest.raises(HcclEnvironmentError, match="RANK_ID not set"):
        check_environment({"RANK_TABLE_FILE": str(table_file), "RANK_SIZE": "x", "POD_NAME": "p"})
    with pytest.raises(HcclEnvironmentError, match="POD_NAME"):
        check_environment(_env(tmp_path / "missing.json", rank="x", POD_NAME="p"))
    with pytest.raises(HcclEnvironmentError, match="file not found"):
        check_environment(_env(tmp_path / "missing.json", rank="x"))


def test_error_is_a_value_error() -> None:
    assert issubclass(HcclEnvironmentError, ValueError)
