"""What a loopback CPU job exposes on the network, sampled from /proc while it runs (no ss needed).

- backend tf: TensorFlow's gRPC servers bind every interface (launcher.netns), so the ranks run in a
  network namespace of their own holding only ``lo``; the host's namespace has none of their ports;
- backend horovod: the launcher's rendezvous and Gloo listen on 127.0.0.1 only, and the rendezvous
  answers only requests that carry the job's secret.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from launcher.netns import NamespaceError, PrivateNetwork
from tests.jobutil import free_port, job_pids, popen_launcher, sets

needs_horovod = pytest.mark.skipif(importlib.util.find_spec("horovod") is None,
                                   reason="horovod not installed (make horovod)")
Listener = Tuple[str, int]
TINY = dict(stages="[train]", data__train_limit=200, train__epochs=5, train__log_every=100, devices__count=2,
            devices__threads=1, launch__collective_timeout_s=60, launch__grace_period_s=2)


def _socket_inodes(pid: int) -> Set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)  # /proc/net/tcp{,6}: 32-bit words in host (little-endian) order
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listeners(pid: int, only_its_own: bool = True) -> List[Listener]:
    """The TCP sockets listening in ``pid``'s network namespace (only those ``pid`` holds, unless
    ``only_its_own`` is False)."""
    mine = _socket_inodes(pid) if only_its_own else None
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and (mine is None or fields[9] in mine):  # 0A: TCP_LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address), int(port, 16)))
    return found


def interfaces(pid: int) -> Set[str]:
    return {line.split(":")[0].strip() for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]}


def host_ports() -> Set[int]:
    """Every listening port of the test's own (the host's) network namespace."""
    return {port for _, port in listeners(os.getpid(), only_its_own=False)}


def _sample(run: Path, launcher_pid: int, seen: Dict[int, Set[Listener]], lo_only: Dict[int, bool]) -> None:
    for pid in [launcher_pid] + job_pids(run):
        try:
            seen.setdefault(pid, set()).update(listeners(pid))
            lo_only[pid] = interfaces(pid) == {"lo"}
        except OSError:
            continue  # exited meanwhile


def _run_and_sample(tmp_path: Path, backend: str) -> Tuple[Dict[int, Set[Listener]], Dict[int, bool], Set[int], int]:
    run, port = tmp_path / "job", free_port()
    proc = popen_launcher("configs/smoke.yaml", *sets(**TINY, output_dir=run, backend=backend, launch__port=port))
    seen: Dict[int, Set[Listener]] = {}
    lo_only: Dict[int, bool] = {}
    on_host: Set[int] = set()
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        _sample(run, proc.pid, seen, lo_only)
        on_host |= host_ports() & set(range(port, port + 2))
        time.sleep(0.05)
    output = proc.communicate(timeout=60)[0] if proc.poll() is not None else ""
    if proc.returncode is None:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    return seen, lo_only, on_host, port


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _private_network_available() -> bool:
    try:
        PrivateNetwork().close()
        return True
    except NamespaceError:
        return False


@pytest.mark.skipif(not _private_network_available(), reason="no network namespaces here (not root, "
                    "no unprivileged user namespaces)")
def test_tf_loopback_job_is_reachable_only_over_loopback(tmp_path: Path) -> None:
    seen, lo_only, on_host, port = _run_and_sample(tmp_path, "tf")
    grpc = {pid: found for pid, found in seen.items() if any(p in (port, port + 1) for _, p in found)}
    assert len(grpc) == 2, seen  # both ranks' servers were seen listening
    for pid, found in seen.items():
        exposed = [(a, p) for a, p in found if not _loopback(a)]
        assert not exposed or lo_only[pid], f"pid {pid} listens on {exposed} with interfaces beyond lo"
    assert on_host == set(), f"ports {on_host} listen in the host's namespace"


@needs_horovod
def test_horovod_loopback_job_listens_on_loopback_only(tmp_path: Path) -> None:
    seen, _, _, port = _run_and_sample(tmp_path, "horovod")
    everything = {listener for found in seen.values() for listener in found}
    assert ("127.0.0.1", port) in everything  # the launcher's rendezvous
    assert all(_loopback(address) for address, _ in everything), everything


@needs_horovod
def test_rendezvous_answers_only_with_the_secret() -> None:
    import rank_table
    from launcher.horovod_rendezvous import Rendezvous, rendezvous_address

    port = free_port(1)
    server = Rendezvous(rank_table.local_table(2), port, "s3cret-s3cret-s3cret")
    try:
        def call(path: str, method: str = "GET", body: bytes = None) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status
            except urllib.error.HTTPError as e:
                return e.code

        assert call("/global/intruder", "PUT", b"x") == 403
        assert call("/global/intruder") == 403
        assert call("/wrong:1/global/intruder", "PUT", b"x") == 403
        assert call("/", "HEAD") == 405  # not the launcher's working directory
        # What Gloo's client sends: http:// + HOROVOD_GLOO_RENDEZVOUS_ADDR + :port/scope/key
        prefix = "/" + rendezvous_address("127.0.0.1", port, "s3cret-s3cret-s3cret").split("/", 1)[1] + f":{port}"
        assert call(f"{prefix}/global/k", "PUT", b"v") == 200
        assert call(f"{prefix}/global/k") == 200
    finally:
        server.close()


def test_rendezvous_secret_from_the_environment_or_made_for_a_one_launcher_job() -> None:
    from launcher.errors import LaunchError
    from launcher.horovod_rendezvous import SECRET_ENV, rendezvous_address, rendezvous_secret

    made = rendezvous_secret({}, whole_job_here=True)
    assert made and made != rendezvous_secret({}, whole_job_here=True)  # fresh each launch
    assert rendezvous_secret({}, whole_job_here=False) is None  # several servers: only if given alike
    assert rendezvous_secret({SECRET_ENV: "a" * 20}, whole_job_here=False) == "a" * 20
    for bad in ("short", "has space in it here", "x/y" * 8):
        with pytest.raises(LaunchError, match=SECRET_ENV):
            rendezvous_secret({SECRET_ENV: bad}, whole_job_here=True)
    assert rendezvous_address("10.0.0.1", 29500, None) == "10.0.0.1"
    assert rendezvous_address("10.0.0.1", 29500, "s" * 16) == "10.0.0.1:29500/" + "s" * 16


@pytest.mark.parametrize("sets_, command, wanted", [
    (dict(backend="tf"), (), True),
    (dict(backend="tf"), ("python3", "mine.py"), False),  # a program of the user's may need the network
    (dict(backend="horovod"), (), False),  # its rendezvous is in the launcher, outside any namespace
    (dict(backend="tf", devices__type="gpu"), (), False),
])
def test_private_network_only_for_the_loopback_cpu_tf_job(sets_: Dict[str, str], command: Tuple[str, ...],
                                                          wanted: bool) -> None:
    import rank_table
    from job.spec import load_spec
    from launcher.multi import network_plan, private_network_wanted

    overrides = [f"{k.replace('__', '.')}={v}" for k, v in dict(sets_, devices__count=2).items()]
    spec = load_spec(Path(__file__).resolve().parents[1] / "configs/smoke.yaml", overrides)
    assert private_network_wanted(spec, rank_table.local_table(2), command) is wanted
    assert private_network_wanted(spec, rank_table.local_table(2, n_servers=2), command) is False  # 2 launchers
    (line,) = network_plan(spec, rank_table.local_table(2), command, secret=None)
    assert ("namespace of their own" in line) is wanted


def test_dry_run_shows_where_things_listen_and_never_the_secret() -> None:
    import subprocess
    import sys

    from launcher.horovod_rendezvous import SECRET_ENV
    from tests.jobutil import REPO, job_env

    env = job_env(**{SECRET_ENV: "not-to-be-printed-0123"})
    result = subprocess.run([sys.executable, "-m", "launcher", "configs/cpu_2p_horovod.yaml", "--dry-run"],
                            cwd=REPO, env=env, text=True, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "# network: Horovod's rendezvous on 127.0.0.1:29500 (per-job secret)" in result.stdout
    assert "HOROVOD_GLOO_RENDEZVOUS_ADDR=127.0.0.1:29500/SECRET" in result.stdout
    assert "not-to-be-printed" not in result.stdout + result.stderr
