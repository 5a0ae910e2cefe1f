"""A seeded mutation fuzzer over the three kinds of file csgm reads back: job specs, rank tables and
recovery units. Fixed seeds and counts, a few seconds each. A case fails on

- any exception other than the project's own error for that input (SpecError, RankTableError; a unit
  is either trusted or recomputed, it never raises),
- any single read that takes more than a second (a hang, or an expansion),
- a message that is more than one printable line, or longer than 1,000 characters,
- a silent acceptance: an accepted input that breaks an invariant stated below.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

import rank_table
from common.records import DIGEST_KEY, seal
from common.schema import SpecError, to_data
from job.spec import DNS_LABEL, STAGE_ORDER, load_spec, spec_to_yaml
from rank_table.parse import HOSTNAME, _is_ip

REPO = Path(__file__).resolve().parent.parent
SLOW_S = 1.0

TOKENS = ["&a ", "*a", "*b", "[", "]", "{", "}", ": ", ":", "\n", "  ", "- ", ", ", "010", "0x1f", "1_000", "1:30",
          "yes", "off", "~", "null", "!!python/object/apply:os.system ['true']", "!!binary ", "\x00", "\t",
          "\u202e", "\"", "'", "#", "? ", "<<: ", "9" * 5000, "-1", "1e400", ".nan", ".inf", "\\ud800",
          "\"\\ud800\"", "\"\\x00\"", "%YAML 1.1\n", "---\n", "...\n", "&b [*a, *a, *a, *a]", "\ufeff", "\r"]


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if op == 0:
            data[at:at] = rng.choice(TOKENS).encode("utf-8", "surrogatepass")
        elif op == 1 and data:
            del data[at:at + rng.randint(1, 8)]
        elif op == 2 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 3:
            lines = bytes(data).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])  # a line twice: a key twice, or a list item more
            data = bytearray(b"\n".join(lines))
        else:
            data[at:at] = bytes([rng.randrange(256)])
    return bytes(data)


def timed(action: Callable[[], Any]) -> Tuple[Any, float]:
    began = time.monotonic()
    result = action()
    return result, time.monotonic() - began


def check_message(error: Exception) -> None:
    text = str(error)
    assert text.isprintable() and len(text) < 1000, text[:2000]


# --- specs ---------------------------------------------------------------------------------------------

SPECS = ["smoke.yaml", "cpu_2p_tf.yaml", "mnist_8p.yaml", "reference.yaml"]


def spec_invariants(spec: Any, tmp_path: Path) -> None:
    """An accepted spec: its resolved form reads back as the same spec; the cross-field rules hold."""
    again = tmp_path / "again.yaml"
    again.write_text(spec_to_yaml(spec), encoding="utf-8")
    assert load_spec(again) == spec
    assert DNS_LABEL.fullmatch(spec.name)
    assert list(spec.stages) == [s for s in STAGE_ORDER if s in spec.stages]
    assert 0 <= spec.devices.threads <= 1024
    assert spec.output_dir is None or spec.output_dir.strip()

    def strings(value: Any) -> None:
        if isinstance(value, str):
            assert value.isprintable(), value
        elif isinstance(value, (list, dict)):
            for item in (value.values() if isinstance(value, dict) else value):
                strings(item)
    strings(to_data(spec))


@pytest.mark.parametrize("name", SPECS)
def test_fuzz_specs(tmp_path: Path, name: str) -> None:
    rng = random.Random(f"spec-{name}")
    original = (REPO / "configs" / name).read_bytes()
    path = tmp_path / name
    accepted = 0
    for _ in range(150):
        path.write_bytes(mutate_bytes(rng, original))
        try:
            spec, seconds = timed(lambda: load_spec(path))
        except SpecError as e:
            check_message(e)
            continue
        assert seconds < SLOW_S, (seconds, path.read_bytes()[:300])
        spec_invariants(spec, tmp_path)
        accepted += 1
    assert accepted > 0  # the mutator also makes harmless changes (comments, spacing)


# --- rank tables -----------------------------------------------------------------------------------

VALUES: List[Any] = ["", " ", "0", "-1", "16", "007", "1.2", "x", "10.0.0.1", "0.0.0.0", "224.0.0.1", "ff02::1",
                     "a\nb", "\ud800", "\u202e10.0.0.1", "node_0", "node-0", "../../etc", "$(id)", "10.0.0.1 ", 7,
                     7.5, True, None, [], {}, "9" * 30, "1.0", "1.2", "completed", "initializing", "a" * 2000]


def _nodes(value: Any, out: List[Any]) -> List[Any]:
    if isinstance(value, (dict, list)):
        out.append(value)
        for child in (value.values() if isinstance(value, dict) else value):
            _nodes(child, out)
    return out


def mutate_table(rng: random.Random, table: Dict[str, Any]) -> Tuple[str, bool]:
    """(JSON text, whether a key is written twice in one object: never acceptable)."""
    data = copy.deepcopy(table)
    for _ in range(rng.randint(1, 3)):
        node = rng.choice(_nodes(data, []))
        op = rng.randrange(5)
        if isinstance(node, dict) and node:
            key = rng.choice(sorted(node))
            if op == 0:
                del node[key]
            elif op == 1:
                node[rng.choice(["rank", "devices", "group_list", "server_ip", key + "_"])] = rng.choice(VALUES)
            elif op == 2:
                node[key + "\x00TWICE"] = rng.choice(VALUES)
            else:
                node[key] = rng.choice(VALUES)
        elif isinstance(node, list) and node:
            i = rng.randrange(len(node))
            if op == 0:
                del node[i]
            elif op == 1:
                node.insert(i, copy.deepcopy(node[i]))
            else:
                node[i] = rng.choice(VALUES)
    twice = any(key.endswith("\x00TWICE") and key[:-6] in node for node in _nodes(data, [])
                if isinstance(node, dict) for key in node)
    return json.dumps(data, ensure_ascii=True).replace("\\u0000TWICE", ""), twice


def table_invariants(table: rank_table.RankTable) -> None:
    """An accepted table: ranks 0..N-1 once each, servers unique and reachable by name, every string
    printable, device addresses unicast, and its JSON form parses to the same table."""
    ranks = sorted(d.rank_id for s in table.servers for d in s.devices)
    assert ranks == list(range(table.world_size))
    assert len(set(table.server_ids)) == len(table.server_ids)
    for server in table.servers:
        assert _is_ip(server.server_id) or HOSTNAME.fullmatch(server.server_id), server.server_id
        for device in server.devices:
            for address in filter(None, (device.device_ip or "").split(",")):
                import ipaddress
                ip = ipaddress.ip_address(address.strip())
                assert not (ip.is_multicast or ip.is_unspecified)
            assert all(v.isprintable() for _, v in device.extras)
    assert all(isinstance(v, str) and v.isprintable() for v in _strings(table.to_json()))
    assert rank_table.parse(table.to_json()) == table


def _strings(value: Any) -> List[Any]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k] + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value]


@pytest.mark.parametrize("name", ["rank_table_8p.json", "rank_table_2x2_loopback.json"])
def test_fuzz_rank_tables(tmp_path: Path, name: str) -> None:
    rng = random.Random(f"table-{name}")
    raw = (REPO / "configs" / name).read_bytes()
    original = json.loads(raw)
    path = tmp_path / name
    outcomes = {"accepted": 0, "refused": 0}
    for i in range(1500):
        if i % 3:
            text, twice = mutate_table(rng, original)
            path.write_text(text, encoding="ascii")
        else:
            path.write_bytes(mutate_bytes(rng, raw))
            twice = False
        try:
            table, seconds = timed(lambda: rank_table.load(path))
        except rank_table.RankTableError as e:
            check_message(e)
            outcomes["refused"] += 1
            continue
        assert not twice, path.read_text()[:500]
        assert seconds < SLOW_S
        table_invariants(table)
        outcomes["accepted"] += 1
    assert outcomes["accepted"] and outcomes["refused"]


# --- recovery units ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unit_files(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Any, Any, Path, Dict[str, bytes], Any]:
    from csgm.recovery import Unit, UnitStore  # imports TensorFlow (the estimators): once per module

    folder = tmp_path_factory.mktemp("units")
    unit = Unit("gaussian", 25, "lasso", 0, 4)
    store = UnitStore(folder, "d" * 16)
    rows = [{"measurement": "gaussian", "m": 25, "method": "lasso", "image": i, "mse": 0.07 + i / 100,
             "noise_std": 0.1} for i in range(4)]
    pixels = np.random.default_rng(0).random((4, 784))
    store.save(unit, rows, pixels, seconds=1.5)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    good, why = store.read(unit)
    assert good is not None, why
    return store, unit, folder, files, good


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return (json.dumps({k: v for k, v in a.items() if k != "pixels"}, sort_keys=True)
            == json.dumps({k: v for k, v in b.items() if k != "pixels"}, sort_keys=True)
            and np.array_equal(a["pixels"], b["pixels"]))


def _reseal(rng: random.Random, text: bytes) -> bytes:
    """Edit one row value and recompute the content digest (someone who knows the format)."""
    record = json.loads(text)
    row = rng.choice(record["rows"])
    row[rng.choice(sorted(row))] = rng.choice(VALUES + [-1.0, float("nan"), 1e-9, 3])
    return json.dumps(seal({k: v for k, v in record.items() if k != DIGEST_KEY})).encode()


def test_fuzz_units(unit_files: Tuple[Any, Any, Path, Dict[str, bytes], Any]) -> None:
    """Damage is never accepted: a unit read back is the one written (bit for bit) or is recomputed. An
    edit with a recomputed digest (the digests catch damage, not a forger) is accepted only if its rows
    are still well-formed rows of this unit."""
    store, unit, folder, files, good = unit_files
    rng = random.Random("units")
    json_name = f"{unit.id}.json"
    npy_name = f"{unit.id}.npy"
    recomputed = 0
    for i in range(400):
        target = rng.choice([json_name, npy_name])
        resealed = target == json_name and i % 4 == 0
        damaged = _reseal(rng, files[json_name]) if resealed else mutate_bytes(rng, files[target])
        for name, blob in files.items():
            (folder / name).write_bytes(damaged if name == target else blob)
        (record, why), seconds = timed(lambda: store.read(unit))
        assert seconds < SLOW_S
        if record is None:
            assert why, "a unit whose files exist is either used or named as damaged"
            recomputed += 1
            continue
        if not resealed:
            assert _same(record, good), (target, damaged[:300])
            continue
        assert len(record["rows"]) == unit.stop - unit.first
        for offset, row in enumerate(record["rows"]):
            assert row["image"] == unit.first + offset and row["method"] == unit.method
            assert isinstance(row["mse"], (int, float)) and not isinstance(row["mse"], bool)
            assert math.isnan(row["mse"]) or row["mse"] >= 0
    assert recomputed > 200
