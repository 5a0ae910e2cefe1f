"""Every reproduction of the reliability review (../shared/reviews/reliability.md, findings F1, F2, F3,
F7, F8, F11) as a test: hostile or malformed input gives one ``error:`` line naming the file, exit 2
(``rank_table validate``: its documented 1 for a table that is read and invalid), no traceback,
within 10 s and 200 MB of memory (the child's peak RSS, from wait4).

Neither ``python -m launcher SPEC --dry-run`` nor ``python -m rank_table validate`` imports TensorFlow
(test_dry_runs_do_not_import_tensorflow), so the memory bound holds for every case here.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest

from common.files import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
SECONDS = 10.0
PEAK_BYTES = 200 << 20
SAFETY_BYTES = 2 << 30  # RLIMIT_AS: a regression must not take the shared machine's memory
_DROP = ("XDL_IP", "POD_NAME", "RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID", "JOB_ID", "TF_CONFIG",
         "RANK_TABLE_FILE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES")


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str, seconds: float, peak_bytes: int):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.seconds, self.peak_bytes = seconds, peak_bytes


# The child is started by this small trampoline, not by the test process itself: Linux carries the
# larger of the old and the new address space's peak RSS across execve (fs/exec.c exec_mmap,
# setmax_mm_hiwater_rss), so a child forked straight from a pytest worker that has imported
# TensorFlow would report the worker's ~330 MB as its own peak. The trampoline's own footprint is a
# bare interpreter's; it reports the command's peak RSS (wait4) on its last stderr line.
TRAMPOLINE = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\n@peak %d" % (usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""


def run(*argv: str, cwd: Path = REPO) -> Run:
    """``python -m argv...`` with its wall time and its own peak RSS (see TRAMPOLINE); killed after
    3 x SECONDS."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith(("CM_", "PYTEST_"))}
    env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-S", "-c", TRAMPOLINE, str(SAFETY_BYTES), sys.executable, "-m", *argv],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    killer = threading.Timer(3 * SECONDS, lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        stdout, stderr = proc.communicate()
    finally:
        killer.cancel()
    seconds = time.monotonic() - began
    err, _, peak = stderr.decode(errors="replace").rpartition("\n@peak ")
    assert peak.strip().isdigit(), stderr[-2000:]  # the trampoline reported (it was not killed)
    return Run(proc.returncode, stdout.decode(errors="replace"), err, seconds, int(peak))


def refused(result: Run, *fragments: str, code: int = 2) -> str:
    """One error line containing each fragment, exit ``code``, no traceback, in time and memory."""
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: "), lines[0]
    assert len(lines[0]) < 600, lines[0]  # values are echoed shortened, never expanded
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.seconds < SECONDS, result.seconds
    assert result.peak_bytes < PEAK_BYTES, result.peak_bytes
    return lines[0]


def dry_run(spec: Path, *args: str) -> Run:
    return run("launcher", str(spec), "--dry-run", *args)


def validate(table: Path) -> Run:
    return run("rank_table", "validate", str(table))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def billion_laughs(levels: int) -> str:
    """The review's 295-byte bomb: each level lists the previous one 9 times (9**levels values)."""
    parts = ["[&a [x,x,x,x,x,x,x,x,x]"]
    names = "abcdefghijklmnop"
    for i in range(1, levels):
        parts.append(f", &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    return "".join(parts) + "]"


def table_json(server_id: str = "127.0.0.1", device_ip: Optional[str] = None, raw: Optional[str] = None) -> str:
    """A one-device table; ``raw`` replaces the server_id value as written (JSON text, escapes kept)."""
    ip = f', "device_ip": "{device_ip}"' if device_ip is not None else ""
    sid = raw if raw is not None else f'"{server_id}"'
    return ('{"version": "1.0", "status": "completed", "server_count": "1", "server_list": [{"server_id": '
            f'{sid}, "device": [{{"device_id": "0", "rank_id": "0"{ip}}}]}}]}}')


def spec_with_table(tmp_path: Path, table: Path) -> Path:
    return write(tmp_path / "job.yaml", f"name: t\nbackend: tf\nlaunch:\n  rank_table: {table}\n"
                                        f"output_dir: {tmp_path / 'run'}\n")


# --- F1: alias bombs -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["name", "train"])
def test_alias_bomb_in_a_spec_is_refused_in_seconds(tmp_path: Path, key: str) -> None:
    spec = write(tmp_path / "bomb.yaml", f"{key}: {billion_laughs(9)}\n")
    assert len(spec.read_bytes()) < 400
    refused(dry_run(spec), str(spec), "more than 10000 values once aliases")


def test_small_alias_bomb_gives_a_short_line(tmp_path: Path) -> None:
    """4 levels (6,561 values) pass the node budget; the type error echoes the value shortened (was 39 KB)."""
    spec = write(tmp_path / "bomb_small.yaml", f"name: {billion_laughs(4)}\n")
    line = refused(dry_run(spec), str(spec), "name: expected a string, got [[")
    assert len(line) < 300


def test_alias_bomb_through_set(tmp_path: Path) -> None:
    refused(dry_run(REPO / "configs" / "smoke.yaml", "--set", f"name={billion_laughs(9)}"),
            "--set: name: more than 10000 values once aliases")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "loop.yaml", "name: &a [*a]\n")
    refused(dry_run(spec), str(spec))


# --- F2: FIFOs, devices, huge files ------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    return path


def test_fifo_rank_table_fails_at_once(fifo: Path) -> None:
    refused(validate(fifo), str(fifo), "is a FIFO (named pipe), not a regular file")


def test_fifo_rank_table_through_a_spec(tmp_path: Path, fifo: Path) -> None:
    refused(dry_run(spec_with_table(tmp_path, fifo)), str(fifo), "not a regular file")


def test_fifo_spec_fails_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    os.mkfifo(spec)
    refused(dry_run(spec), str(spec), "not a regular file")


def test_fifo_run_folder_marker_fails_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    os.mkfifo(folder / ".csgm-run")
    refused(dry_run(REPO / "configs/smoke.yaml", "--output-dir", str(folder)), str(folder / ".csgm-run"),
            "not a regular file")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_device_as_rank_table_or_spec(tmp_path: Path, device: str) -> None:
    refused(validate(Path(device)), device, "is a character device")
    refused(dry_run(Path(device)), device, "is a character device")


def test_huge_rank_table_is_refused_before_reading(tmp_path: Path) -> None:
    table = tmp_path / "big.json"
    with open(table, "wb") as f:
        f.truncate(50 << 20)  # sparse: 50 MB on paper, nothing on disk
    refused(validate(table), str(table), "more than the 16777216")
    spec = tmp_path / "big.yaml"
    with open(spec, "wb") as f:
        f.truncate(50 << 20)
    refused(dry_run(spec), str(spec), "more than the 1048576")


# --- F3: tracebacks -------------------------------------------------------------------------------

def test_deeply_nested_table(tmp_path: Path) -> None:
    table = write(tmp_path / "deep.json", "[" * 100_000)
    refused(validate(table), str(table), "nested too deeply", code=1)
    refused(dry_run(spec_with_table(tmp_path, table)), str(table), "nested too deeply")


def test_number_of_5000_digits_in_a_table(tmp_path: Path) -> None:
    table = write(tmp_path / "bignum.json", table_json().replace('"rank_id": "0"', '"rank_id": ' + "7" * 5000))
    # Python >= 3.11 refuses to read it (4300 digits); 3.7 reads it and the parser refuses a number
    refused(validate(table), str(table), "rank_id" if sys.version_info < (3, 11) else "more than 4300 digits", code=1)
    refused(dry_run(spec_with_table(tmp_path, table)), str(table))


def test_complex_key_in_a_spec(tmp_path: Path) -> None:
    spec = write(tmp_path / "complex_key.yaml", "? [a, b]\n: 1\n")
    refused(dry_run(spec), str(spec), "a key is a list or a mapping")


@pytest.mark.parametrize("text", ["[" * 5000, "{a: " * 3000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 200))],
                         ids=["lists", "mappings", "block"])
def test_deep_yaml(tmp_path: Path, text: str) -> None:
    spec = write(tmp_path / "deep.yaml", text + "\n")
    refused(dry_run(spec), str(spec), "nested more than 32 levels")


def test_lone_surrogate_server_id_through_a_spec(tmp_path: Path) -> None:
    table = write(tmp_path / "t.json", table_json(raw='"\\ud800"'))
    refused(dry_run(spec_with_table(tmp_path, table)), str(table), "server_id", "non-printable character U+D800")


def test_threads_have_a_ceiling() -> None:
    refused(dry_run(REPO / "configs" / "smoke.yaml", "--set", "devices.threads=100000000000000000000"),
            "devices.threads: must be <= 1024")


# --- F7: file modes --------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "x.txt", "a")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == mode


# --- F8: rank tables HCCL or the launcher cannot use ---------------------------------------------------

DUPLICATES = {
    "status": ('{"status": "initializing", "status": "completed", "version": "1.0", "server_count": "1", '
               '"server_list": [{"server_id": "127.0.0.1", "device": [{"device_id": "0", "rank_id": "0"}]}]}'),
    "server_list": ('{"status": "completed", "version": "1.0", "server_count": "1", "server_list": [], '
                    '"server_list": [{"server_id": "127.0.0.1", "device": [{"device_id": "0", "rank_id": "0"}]}]}'),
}


@pytest.mark.parametrize("key", sorted(DUPLICATES))
def test_duplicate_json_keys(tmp_path: Path, key: str) -> None:
    table = write(tmp_path / "dup.json", DUPLICATES[key])
    refused(validate(table), str(table), f"key '{key}' appears twice", code=1)
    refused(dry_run(spec_with_table(tmp_path, table)), str(table), "appears twice")


BAD_SERVER_IDS = {
    "path": '"../../etc/x"', "shell": '"$(touch pwned);x"', "newline": '"10.0.0.1\\nerror: fake"',
    "rtl-override": '"\\u202e1.0.0.127"', "nul": '"a\\u0000b"', "trailing-space": '"10.0.0.1 "',
    "surrogate": '"\\udc80"', "underscore": '"node_0"', "long": '"' + "a" * 300 + '"',
}


@pytest.mark.parametrize("name", sorted(BAD_SERVER_IDS))
def test_server_id_must_be_an_address_or_a_host_name(tmp_path: Path, name: str) -> None:
    table = write(tmp_path / "t.json", table_json(raw=BAD_SERVER_IDS[name]))
    line = refused(validate(table), str(table), "$.server_list[0].server_id", code=1)
    assert "fake" not in line or "\\n" in line  # a newline is shown escaped, never printed
    assert not (REPO / "pwned").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("server_id", ["10.0.0.1", "fe80::1", "node-0", "worker-0.csgm.default.svc", "Host7"])
def test_good_server_ids_pass(tmp_path: Path, server_id: str) -> None:
    result = validate(write(tmp_path / "t.json", table_json(server_id)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("address, problem", [("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
                                              ("::", "unspecified"), ("ff02::1", "multicast")])
def test_device_ip_must_be_unicast(tmp_path: Path, address: str, problem: str) -> None:
    table = write(tmp_path / "t.json", table_json(device_ip=address))
    refused(validate(table), str(table), "device_ip", problem, code=1)


# --- F11: silent acceptance in specs and dry runs ------------------------------------------------------

@pytest.mark.parametrize("text, fragments", [
    ("train:\n  epochs: 010\n", ("line 2", "octal number 8", "Write 10")),
    ("train:\n  epochs: 1_000\n", ("Write 1000",)),
    ("train:\n  epochs: 0x10\n", ("hexadecimal", "Write 16")),
    ("recovery:\n  fresh_matrix: yes\n", ("Write true",)),
])
def test_yaml11_number_forms_in_a_file(tmp_path: Path, text: str, fragments: Tuple[str, ...]) -> None:
    spec = write(tmp_path / "job.yaml", text)
    refused(dry_run(spec), str(spec), *fragments)


@pytest.mark.parametrize("override, fragment", [("train.epochs=0x10", "Write 16"), ("train.epochs=010", "Write 10"),
                                                ("train.epochs=1_000", "Write 1000")])
def test_yaml11_number_forms_through_set(override: str, fragment: str) -> None:
    refused(dry_run(REPO / "configs" / "smoke.yaml", "--set", override), "--set: train.epochs", fragment)


@pytest.mark.parametrize("stages", ["[train, train, recover]", "[recover, train]", "[recover, recover]"])
def test_stages_once_each_in_order(stages: str) -> None:
    refused(dry_run(REPO / "configs" / "smoke.yaml", "--set", f"stages={stages}"), "stages",
            "List each stage once, in the order they run")


def _smoke(tmp_path: Path) -> Path:
    text = (REPO / "configs" / "smoke.yaml").read_text()
    return write(tmp_path / "smoke.yaml", text + f"output_dir: {tmp_path / 'run'}\n")


@pytest.mark.parametrize("overrides, key, fragment", [
    (["recovery.images=1000000000"], "recovery.images", "held-out images exist"),
    (["data.validation=100000"], "data.heldout + data.validation", "leaves no training images"),
    (["train.batch_size=100000"], "train.batch_size", "more than the"),
])
def test_dry_run_checks_what_the_run_checks(tmp_path: Path, overrides: List[str], key: str, fragment: str) -> None:
    spec = _smoke(tmp_path)
    sets: List[str] = [a for o in overrides for a in ("--set", o)]
    refused(dry_run(spec, *sets), f"{spec} with --set", key, fragment)
    # the real run gives the same line before it starts (and before TensorFlow is imported)
    refused(run("launcher", str(spec), *sets), f"{spec} with --set", key, fragment)


def test_dry_run_checks_a_spec_file_too_large_for_the_data(tmp_path: Path) -> None:
    spec = write(tmp_path / "job.yaml", f"name: t\ndata:\n  validation: 4500\noutput_dir: {tmp_path / 'run'}\n")
    refused(dry_run(spec), f"{spec}: data.heldout + data.validation: 5500 leaves no training images")


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    file = write(tmp_path / "hostname", "h\n")
    refused(dry_run(REPO / "configs" / "smoke.yaml", "--output-dir", str(file)), str(file), "is a file, not a folder")


def test_empty_output_dir() -> None:
    refused(dry_run(REPO / "configs" / "smoke.yaml", "--set", "output_dir=''"), "output_dir: is empty")


def test_nul_in_yaml_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "nul.yaml"
    spec.write_bytes(b"name: a\x00b\n")
    refused(dry_run(spec), str(spec), "character #x0000 is not allowed")


# --- the bound on memory holds because no dry run imports TensorFlow --------------------------------

@pytest.mark.parametrize("argv", [("launcher", "configs/smoke.yaml", "--dry-run"),
                                  ("launcher", "configs/cpu_2p_tf.yaml", "--dry-run"),
                                  ("rank_table", "validate", "configs/rank_table_2x2_loopback.json")])
def test_dry_runs_do_not_import_tensorflow(argv: Sequence[str]) -> None:
    code = ("import runpy, sys\n"
            "module, sys.argv = sys.argv[1], sys.argv[1:]\n"
            "try:\n    runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


# --- what the bounded loader still reads ------------------------------------------------------------

def test_the_loader_keeps_merge_keys_and_refuses_python_tags() -> None:
    from common.inputs import InputError, loads_yaml

    assert loads_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n", "s") == {"base": {"x": 1, "y": 2},
                                                                               "c": {"x": 1, "y": 3}}
    assert loads_yaml("a: [0, 10, -3, 1.5e-3, true, null, '010']", "s") == {"a": [0, 10, -3, 1.5e-3, True, None, "010"]}
    for text in ("c: {x: 1, x: 2}", "a: !!python/object/apply:os.system ['true']"):
        with pytest.raises(InputError):
            loads_yaml(text, "s")
