"""The command lines as a newcomer meets them (issue 17): versions, help, JSON for scripts, exit codes,
flags that do what torchrun users expect, and messages that point the right way.

Every launcher call is a dry run or a tiny `-- COMMAND`: nothing trains here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import rank_table
from common.version import VERSION
from launcher.cli import build_parser as launcher_parser
from rank_table.cli import build_parser as rank_table_parser
from launcher.cli import main as launcher_main
from rank_table.cli import main as rank_table_main
from tests.test_docs import run_in_process
from tests.test_launcher_cli import REPO, _env, assert_one_line_error, dry_run_env



@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process command lines (fast: the imports are loaded once) from the repository, in an
    environment without the variables that change what the launcher does."""
    monkeypatch.chdir(REPO)
    for name in ("RANK_TABLE_FILE", "XDL_IP", "POD_NAME", "RANK_ID", "RANK_SIZE"):
        monkeypatch.delenv(name, raising=False)


def _rank_table(*args: str) -> subprocess.CompletedProcess:
    return run_in_process(rank_table_main, list(args))


def launch(*args: str) -> subprocess.CompletedProcess:
    return run_in_process(launcher_main, list(args))


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield parser.prog, action


@pytest.mark.parametrize("parser", [launcher_parser, rank_table_parser], ids=["launcher", "rank_table"])
def test_every_option_has_help(parser) -> None:
    missing = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in _options(parser()) if not a.help]
    assert not missing


def test_version_on_both_entry_points() -> None:
    for argv in (["launcher", "--version"], ["rank_table", "--version"]):
        result = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip() == f"python -m {argv[0]} {VERSION}", result


def test_validate_json_and_exit_codes(tmp_path: Path) -> None:
    good = json.loads(_rank_table("validate", "--json", "configs/rank_table_2x2_loopback.json").stdout)
    assert good["ok"] is True and good["world_size"] == 4
    assert [s["server_id"] for s in good["servers"]] == ["127.0.0.2", "127.0.0.3"]
    broken = tmp_path / "hccl.json"
    broken.write_text('{"version": "1.0"}')
    result = _rank_table("validate", "--json", str(broken))
    assert result.returncode == 1  # the check ran and failed
    assert json.loads(result.stdout)["ok"] is False
    assert _rank_table("validate", str(tmp_path / "absent.json")).returncode == 2  # bad input


def test_hccn_messages_name_the_file_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    missing = _rank_table("generate", "--server-id", "a", "--hccn-conf", "./hccn.conf")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ./hccn.conf: file: cannot read") and "usually" not in missing.stderr
    (tmp_path / "hccn.conf").write_text("address_0=192.168.100.101\n")
    lacking = _rank_table("generate", "--server-id", "a", "--hccn-conf", "./hccn.conf", "--devices", "0,1")
    assert lacking.returncode == 2 and "add address_1=<ip> to ./hccn.conf" in lacking.stderr
    no_tool = _rank_table("generate", "--server-id", "a", "--hccn-tool", "--hccn-tool-bin", "no_such_tool")
    assert no_tool.stderr.startswith("error: no_such_tool: command not found;") and "$" not in no_tool.stderr


def test_dry_run_json_shows_the_flags_in_the_resolved_spec(tmp_path: Path) -> None:
    result = launch("configs/cpu_2p_tf.yaml", "--dry-run", "--json", "--rank-table",
                    "configs/rank_table_2x2_loopback.json", "--server-id", "127.0.0.3", "--max-restarts", "3",
                    "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["spec"]["launch"]["rank_table"] == "configs/rank_table_2x2_loopback.json"
    assert plan["spec"]["launch"]["max_restarts"] == 3 and plan["spec"]["output_dir"] == str(tmp_path / "out")
    assert plan["this_server"] == "127.0.0.3" and [r["rank"] for r in plan["servers"][0]["ranks"]] == [2, 3]
    assert plan["servers"][0]["ranks"][1]["env"]["RANK_ID"] == "3"
    assert any(line.startswith("train: starts fresh") for line in plan["plan"])


def test_rank_table_file_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK_TABLE_FILE", str(REPO / "configs/rank_table_2x2_loopback.json"))
    result = launch("configs/cpu_2p_tf.yaml", "--dry-run", "--server-id", "127.0.0.2")
    assert result.returncode == 0, result.stderr
    assert "of 4 (2 server(s)); rank table" in result.stdout and sorted(dry_run_env(result.stdout)) == [0, 1]


@pytest.mark.parametrize("args, fragment", [
    (["--max-restarts", "-1"], "argument --max-restarts: '-1' is not an integer >= 0"),
    (["-np", "0"], "argument -np/--nproc-per-node: '0' is not an integer >= 1"),
    (["--json"], "--json needs --dry-run"),
])
def test_bad_flags_exit_2(args, fragment: str) -> None:
    result = launch("configs/smoke.yaml", *args)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr


def test_single_card_mode_warns_about_flags_it_ignores() -> None:
    result = launch("configs/smoke.yaml", "--dry-run", "--max-restarts", "2", "--console-ranks", "0",
                    "--server-id", "x")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: --max-restarts, --console-ranks, --server-id: no effect in "
                                    "single-card mode")


def test_local_backend_on_several_ranks_points_to_a_backend_not_a_table() -> None:
    line = assert_one_line_error(launch("configs/mnist_1p.yaml", "--set", "devices.count=3", "--dry-run"),
                                 "backend: local has no collectives to train 3 ranks (devices.count: 3)",
                                 "--set backend=tf")
    assert "rank table" not in line


def test_rank_table_time_out_names_the_launchers_knob(tmp_path: Path) -> None:
    table = tmp_path / "hccl.json"
    table.write_text(json.dumps({"status": "initializing", "version": "1.0", "server_list": []}))
    line = assert_one_line_error(launch("configs/cpu_2p_tf.yaml", "--dry-run", "--rank-table", str(table),
                                        "--set", "launch.rank_table_timeout_s=0"),
                                 "no completed rank table after 0 s")
    assert "--set launch.rank_table_timeout_s=SECONDS" in line and "--timeout" not in line


def test_relative_paths_in_a_spec_resolve_against_its_folder(tmp_path: Path) -> None:
    """Run from another folder, a spec's rank table next to it is found (before: a 300 s wait)."""
    folder = tmp_path / "job"
    folder.mkdir()
    rank_table.write(rank_table.local_table(2), folder / "two.json")
    (folder / "spec.yaml").write_text("name: rel\nbackend: tf\ndevices: {count: 2}\noutput_dir: out\n"
                                      "launch: {rank_table: two.json, rank_table_timeout_s: 1}\n")
    result = subprocess.run([sys.executable, "-m", "launcher", "job/spec.yaml", "--dry-run", "--json"],
                            cwd=tmp_path, env=dict(_env(), PYTHONPATH=str(REPO)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["rank_table"] == str(folder / "two.json") and plan["spec"]["output_dir"] == str(folder / "out")


def test_single_card_dry_run_checks_the_data_files() -> None:
    result = launch("configs/reference.yaml", "--dry-run", "--set", "data.path=/nonexistent/mnist")
    assert result.returncode == 2
    assert result.stderr.startswith("error: data.path: /nonexistent/mnist is not a folder"), result.stderr


def test_missing_horovod_is_one_line_naming_make_horovod(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from job.spec import load_spec
    from launcher import multi
    from launcher.errors import LaunchError

    real = importlib.util.find_spec
    monkeypatch.setattr(multi.importlib.util, "find_spec", lambda name: None if name == "horovod" else real(name))
    with pytest.raises(LaunchError, match="backend: horovod needs Horovod, which is not installed. Run make horovod"):
        multi.check_backend(load_spec(REPO / "configs/cpu_2p_horovod.yaml"), 2, [])
