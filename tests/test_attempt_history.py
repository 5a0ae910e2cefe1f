"""Per-attempt log folders keep every attempt's evidence: two servers on one shared folder, a
Volcano restart (new job version), and a launcher run again on the same folder."""

from __future__ import annotations

import io
import json
import sys
import threading
from pathlib import Path
from typing import List, Sequence

from launcher.logs import attempt_root, first_free_attempt
from launcher.supervise import RunResult, WorkerSpec, run


def workers(ranks: Sequence[int], code: str) -> List[WorkerSpec]:
    return [WorkerSpec(rank=r, cmd=[sys.executable, "-c", code], env={"RANK": str(r)}) for r in ranks]


def two_servers(log_root: Path, code: str) -> List[RunResult]:
    """Servers A (ranks 0, 1) and B (ranks 2, 3) at once on one folder, as two pods on one claim."""
    results: List[RunResult] = []
    threads = [threading.Thread(target=lambda rs=rs: results.append(
        run(workers(rs, code), log_root, grace_s=1.0, console=io.StringIO(), poll_s=0.02)))
        for rs in ((0, 1), (2, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


FAIL_RANK_1 = "import os, sys; print('first', os.environ['RANK']); sys.exit(3 if os.environ['RANK'] == '1' else 0)"
OK = "import os; print('second', os.environ['RANK'])"


def test_two_servers_keep_both_volcano_attempts(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    first = two_servers(attempt_root(logs, {"CSGM_JOB_VERSION": "0"}), FAIL_RANK_1)
    assert sorted(r.ok for r in first) == [False, True]
    second = two_servers(attempt_root(logs, {"CSGM_JOB_VERSION": "1"}), OK)
    assert all(r.ok for r in second)
    old, new = logs / "volcano-v0" / "attempt_0", logs / "volcano-v1" / "attempt_0"
    for rank in range(4):  # both servers used attempt_0: neither took the other's logs for its own
        assert f"first {rank}" in (old / f"rank_{rank}.log").read_text()
        assert f"second {rank}" in (new / f"rank_{rank}.log").read_text()
    assert json.loads((old / "error_rank_1.json").read_text())["exitcode"] == 3


def test_a_second_run_on_the_same_folder_takes_a_new_attempt(tmp_path: Path) -> None:
    run(workers([0], FAIL_RANK_1.replace("'1'", "'0'")), tmp_path, console=io.StringIO(), poll_s=0.02)
    result = run(workers([0], OK), tmp_path, console=io.StringIO(), poll_s=0.02)
    assert result.ok and result.log_dir == tmp_path / "attempt_1"
    assert "first 0" in (tmp_path / "attempt_0" / "rank_0.log").read_text()
    assert (tmp_path / "attempt_0" / "error_rank_0.json").is_file()  # not deleted by the second run


def test_first_free_attempt_counts_only_this_servers_ranks(tmp_path: Path) -> None:
    (tmp_path / "attempt_0").mkdir()
    (tmp_path / "attempt_0" / "rank_0.log").write_text("")
    (tmp_path / "attempt_3").mkdir()  # empty: another server's folder, or a crash before any log
    assert first_free_attempt(tmp_path, [0, 1]) == 1
    assert first_free_attempt(tmp_path, [2, 3]) == 0
    assert first_free_attempt(tmp_path / "missing", [0]) == 0
    assert attempt_root(tmp_path, {}) == tmp_path
