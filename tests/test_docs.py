"""Docs that stay true: every shell command in README.md, configs/README.md and docs/*.md is checked.

A command this CPU machine can run is run, cheaply: launcher commands as dry runs (the spec loads,
the flags exist, the plan and every rank's environment are computed; no training, the end-to-end
job is tests/test_job.py), rank_table commands for real in a scratch folder, and a `$ command`
followed by its output must print that output. Flags must exist in the command's parser; make
targets must exist. What needs an Ascend host, a cluster or the network is listed in SKIPPED with
the reason. `make docs-check` runs this file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import importlib.util
import re
import shlex
import subprocess
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

from common.logs import LOGGERS
from launcher.cli import build_parser as launcher_parser
from launcher.cli import main as launcher_main
from rank_table.cli import build_parser as rank_table_parser
from rank_table.cli import main as rank_table_main

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "configs/README.md", *sorted((REPO / "docs").glob("*.md"))]
# Commands that cannot run on a CPU machine without network, and why (matched on the start).
SKIPPED = {
    "kubectl": "needs a Kubernetes cluster with Volcano (k8s/README.md; manifests validated in test_k8s_*)",
    "python -m rank_table generate": "reads an Ascend server's /etc/hccn.conf or hccn_tool (generate is "
                                     "run on a test hccn.conf in test_rank_table.py)",
    "python -m rank_table merge server1.json": "merges the output of generate on two Ascend servers",
    "mkdir -p /datasets/mnist": "downloads MNIST (no network at test time)",
    "for f in": "downloads MNIST (no network at test time)",
    "curl": "downloads MNIST (no network at test time)",
}
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:python -m|make) [^`]+)`")


def documented_commands() -> List[Tuple[str, int, str, List[str]]]:
    """(file, line, command, the output lines shown after a '$ command') of every shell line."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in FENCE.finditer(text):
            first_line = text[:block.start()].count("\n") + 2
            lines = _join_synopsis(block.group(1).splitlines())
            for i, line in enumerate(lines):
                shown = line.startswith("$ ")
                command = _strip_comment(line[2:] if shown else line)
                if not command or not re.match(r"(python -m|make|kubectl|mkdir|for |curl|cd )", command):
                    continue
                while command.endswith("\\") and i + 1 < len(lines):  # continued lines
                    i += 1
                    command = command[:-1] + " " + _strip_comment(lines[i])
                output = [ln for ln in lines[i + 1:] if not ln.startswith("$ ")] if shown else []
                found.append((doc.name, first_line + i, command, output))
        for match in INLINE.finditer(text):
            found.append((doc.name, text[:match.start()].count("\n") + 1, match.group(1), []))
    return found


def _join_synopsis(lines: List[str]) -> List[str]:
    """A synopsis wrapped onto indented '[--flag ...]' lines is one command (line numbers kept)."""
    out = list(lines)
    for i in range(len(out) - 1, 0, -1):
        if re.match(r"\s+\[", out[i]) and out[i - 1].strip():
            out[i - 1] += " " + out[i].strip()
            out[i] = ""
    return out


def _strip_comment(line: str) -> str:
    """The command without its '# comment', and without a second column of a side-by-side diagram."""
    return re.split(r"\s{3,}", re.sub(r"\s+#\s.*$", "", line).strip())[0]


COMMANDS = documented_commands()


def _id(entry: Tuple[str, int, str, List[str]]) -> str:
    return f"{entry[0]}:{entry[1]}"


def _unknown_flags(module: str, args: List[str]) -> List[str]:
    """Flags of ``args`` (before any '--') that the command's parser (or subcommand's) lacks."""
    if "--" in args:
        args = args[:args.index("--")]
    parser = launcher_parser() if module == "launcher" else rank_table_parser()
    words = [a for a in args if not a.startswith("-")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and words and words[0] in action.choices:
            parser = action.choices[words[0]]
    known = {s for a in parser._actions for s in a.option_strings}
    return [a.split("=")[0] for a in args if a.startswith("-") and not re.match(r"-\d", a)
            and a.split("=")[0] not in known]


def run_in_process(main: Callable[[List[str]], int], argv: List[str]) -> subprocess.CompletedProcess:
    """The command line's main() in this process (its imports are loaded once: the check stays fast)."""
    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --version, --help, usage errors
            code = e.code if isinstance(e.code, int) else 2
        finally:  # setup_logging() configured the console loggers: put them back as they were
            for lg, (handlers, propagate, level) in zip(loggers, saved):
                lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_the_docs_have_commands() -> None:
    runnable = [c for c in COMMANDS if c[2].startswith("python -m launcher") and "[" not in c[2]]
    assert len(runnable) >= 4, COMMANDS  # the scan itself works


@pytest.mark.parametrize("entry", COMMANDS, ids=[_id(c) for c in COMMANDS])
def test_documented_command(entry: Tuple[str, int, str, List[str]], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    doc, line, command, output = entry
    skipped = next((why for start, why in SKIPPED.items() if command.startswith(start)), None)
    if skipped:
        pytest.skip(skipped)
    if command.startswith("make "):
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
        assert command.split()[1] in targets, f"{doc}:{line}: no make target {command.split()[1]}"
        return
    tokens = shlex.split(re.sub(r"[\[\]]", " ", command))  # a synopsis's [optional parts] kept as words
    assert tokens[:2] == ["python", "-m"] and len(tokens) > 2, f"{doc}:{line}: unchecked command {command}"
    module = tokens[2]
    assert importlib.util.find_spec(module) is not None, f"{doc}:{line}: no module {module}"
    if module not in ("launcher", "rank_table") or len(tokens) == 3:
        return  # it exists; running the benchmarks, k8s and the generators is their own tests' job
    unknown = _unknown_flags(module, tokens[3:])
    assert not unknown, f"{doc}:{line}: {command}: no such flag {unknown}"
    if "[" in command or re.search(r"\b(SPEC|FILE|ID|N|LIST|DIR|COMMAND)\b", command):
        return  # a synopsis: its flags exist, there is nothing to run
    argv = tokens[1:]
    if module == "launcher" and "--dry-run" not in argv and "--version" not in argv:
        at = argv.index("--") if "--" in argv else len(argv)
        argv = argv[:at] + ["--dry-run"] + argv[at:]
    if module == "rank_table":  # in a scratch folder, as a user's files would be
        argv = [str(REPO / a) if a.startswith("configs/") else a for a in argv]
    monkeypatch.chdir(REPO if module == "launcher" else tmp_path)
    for name in ("RANK_TABLE_FILE", "XDL_IP", "POD_NAME"):
        monkeypatch.delenv(name, raising=False)
    result = run_in_process(launcher_main if module == "launcher" else rank_table_main, argv[2:])
    if output:  # '$ command' and what it prints
        shown = "\n".join(output).strip()
        expected_code = 2 if shown.startswith("error:") else 0
        assert result.returncode == expected_code, result.stderr
        assert shown in (result.stdout + result.stderr), (shown, result.stderr)
    else:
        assert result.returncode == 0, f"{doc}:{line}: {' '.join(argv)}\n{result.stderr}"


def readme_outputs() -> List[Tuple[str, bool]]:
    """README's Outputs list as glob patterns: (pattern, written only by multi-rank runs or after a
    SIGTERM, i.e. not by every single-card run)."""
    text = (REPO / "README.md").read_text()
    block = FENCE.search(text[text.index("## Outputs"):]).group(1)
    entries = []
    for line in block.splitlines()[1:]:  # under runs/<name>/
        match = re.match(r"  (\S.*?)\s{2,}(.*)$", line)
        if match:
            for name in match.group(1).split(", "):
                pattern = re.sub(r"<[a-z]+>|N{3,}", "*", name.strip()).rstrip("/")
                entries.append((pattern, "multi-rank runs" in match.group(2) or "SIGTERM" in match.group(2)))
    return entries
