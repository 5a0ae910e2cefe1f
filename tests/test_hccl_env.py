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
    """``device``: the logical id to open, as python -m launcher sets it (DEVICE_ID = ASCEND_DEVICE_ID)."""
    env = {"RANK_TABLE_FILE": str(table_file), "RANK_ID": rank, "RANK_SIZE": size, "PATH": "/bin"}
    if device is not None:
        env["DEVICE_ID"] = env["ASCEND_DEVICE_ID"] = device
    env.update(extra)
    return env


CONTAINER_45 = {"ASCEND_VISIBLE_DEVICES": "4,5"}


@pytest.mark.parametrize("rank, device, extra", [
    ("0", "4", {}), ("1", "5", {}), ("2", "0", {}), ("3", "1", {}),   # bare metal: logical = physical
    ("2", None, {}),                               # ASCEND_DEVICE_ID unset: the adapter opens 0
    ("0", "0", CONTAINER_45), ("1", "1", CONTAINER_45),                # container: index among visible
    ("1", "1", {"ASCEND_VISIBLE_DEVICES": "5,4"}),  # numbered in ascending physical order
])
def test_good_environment_returns_rank_and_size(table_file: Path, rank: str, device: Optional[str],
                                                extra: Dict[str, str]) -> None:
    assert check_environment(_env(table_file, rank=rank, device=device, **extra)) == (int(rank), 4)


@pytest.mark.parametrize("rank, device, extra, opened, expected, fix", [
    ("0", "0", {}, 0, 4, 4),                      # the old mapping: local rank as ASCEND_DEVICE_ID
    ("1", "1", {}, 1, 5, 5),
    ("0", None, {}, 0, 4, 4),                     # unset: device 0 opened silently
    ("3", "7", {}, 7, 1, 1),                      # another server's device
    ("0", "1", CONTAINER_45, 5, 4, 0),            # container: logical 1 is physical 5
])
def test_device_mismatch_is_hccls_refusal_made_early(table_file: Path, rank: str, device: Optional[str],
                                                     extra: Dict[str, str], opened: int, expected: int,
                                                     fix: int) -> None:
    with pytest.raises(HcclEnvironmentError,
                       match=rf"^backend hccl: ASCEND_DEVICE_ID={device or 0} opens physical device {opened} "
                             rf"\(.*\), but .*hccl\.json gives rank {rank} device {expected}; HCCL would refuse "
                             rf"it .*Set ASCEND_DEVICE_ID={fix} \(python -m launcher does\)$"):
        check_environment(_env(table_file, rank=rank, device=device, **extra))


def test_device_not_visible_in_the_container(table_file: Path) -> None:
    with pytest.raises(HcclEnvironmentError, match=r"^backend hccl: the rank table names device 4, but this "
                                                   r"container sees only ASCEND_VISIBLE_DEVICES=5,6"):
        check_environment(_env(table_file, rank="0", device="0", ASCEND_VISIBLE_DEVICES="5,6"))


def test_device_id_must_match_ascend_device_id(table_file: Path) -> None:
    with pytest.raises(HcclEnvironmentError, match=r"DEVICE_ID=4 but ASCEND_DEVICE_ID=0: both name the logical"):
        check_environment(_env(table_file, rank="0", device="0", DEVICE_ID="4", ASCEND_VISIBLE_DEVICES="4,5"))


def test_table_device_ids_checked_for_the_chip(tmp_path: Path) -> None:
    """HCCL on a 910A rejects device ids above 7 (topoinfo_ranktableConcise.cc GetSingleDevice)."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"version": "1.0", "status": "completed", "server_list": [
        {"server_id": "s", "device": [{"device_id": "9", "rank_id": "0"}]}]}))
    with pytest.raises(HcclEnvironmentError, match=r"device_id 9: HCCL accepts device ids 0\.\.7 on an Ascend 910A"):
        check_environment(_env(path, rank="0", size="1", device="9"), chip="910A")
    assert check_environment(_env(path, rank="0", size="1", device="9"), chip="910B") == (0, 1)


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


@pytest.mark.parametrize("key, value", [("DEVICE_ID", ""), ("DEVICE_ID", "four"), ("ASCEND_DEVICE_ID", "0x1")])
def test_device_ids_must_be_integers(table_file: Path, key: str, value: str) -> None:
    with pytest.raises(HcclEnvironmentError, match=rf"^backend hccl: {key}='{value}' must be an integer$"):
        check_environment(_env(table_file, rank="2", **{key: value}))


def test_device_ids_as_numbers(table_file: Path) -> None:
    """'04' is device 4."""
    assert check_environment(_env(table_file, rank="0", device="04"))[0] == 0


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
