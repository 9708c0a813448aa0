"""Starting ranks (birdclef.launch): loopback store on a free port, multi-node torchrun command, failures."""

import ipaddress
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from birdclef import dist, launch


def _listening(pid: int) -> list[tuple[str, int]]:
    """``(address, port)`` of every TCP socket process ``pid`` listens on (from /proc: what `ss -ltnp` shows)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                addr, port = cols[1].split(":")
                found.append((addr, int(port, 16)))
    return found


def _is_loopback(hex_addr: str) -> bool:
    # /proc/net/tcp{,6} print an address as 32-bit words in host (little-endian) order.
    raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, len(hex_addr), 8))
    addr = ipaddress.ip_address(raw)
    return addr.is_loopback or getattr(addr, "ipv4_mapped", None) is not None and addr.ipv4_mapped.is_loopback


def test_relaunch_starts_local_ranks_or_torchrun_at_the_configured_endpoint(monkeypatch):
    launched, execs = [], []
    monkeypatch.setattr(launch, "launch_local", lambda nproc, cmd: launched.append((nproc, cmd)) or 7)

    class ExecvCalledError(Exception):  # os.execv does not return: this process becomes torchrun
        pass

    def execv(path, argv):
        execs.append(argv)
        raise ExecvCalledError

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "--iteration", "1"])
    for var in ("LOCAL_RANK", launch.ENDPOINT_VAR, launch.NNODES_VAR, launch.RDZV_ID_VAR):
        monkeypatch.delenv(var, raising=False)
    launch.relaunch(1)
    assert launched == execs == []
    with pytest.raises(SystemExit) as stop:
        dist.relaunch(2)  # what the stages call
    assert stop.value.code == 7 and launched == [(2, [sys.executable, "stages/train.py", "--iteration", "1"])]
    assert execs == []  # one machine: no torchrun, no store on every interface
    monkeypatch.setenv(launch.ENDPOINT_VAR, "node0:29400")
    monkeypatch.setenv(launch.NNODES_VAR, "2")
    with pytest.raises(ExecvCalledError):
        launch.relaunch(4)
    with pytest.raises(ExecvCalledError):  # one rank on each of 2 nodes is distributed too
        launch.relaunch(1)
    assert execs[1][4] == "--nproc-per-node=1"
    rdzv_id = execs[0].pop(7)
    assert execs[0] == [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4",
                        "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400", "stages/train.py", "--iteration", "1"]
    assert rdzv_id.startswith("--rdzv-id=birdclef-") and rdzv_id == execs[1][7]  # fmt: skip
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a rank: nothing to do
    launch.relaunch(4)
    assert len(execs) == 2 and len(launched) == 1


def test_multi_node_settings_are_checked_and_the_rdzv_id_is_shared_by_the_nodes():
    cmd = ["python", "stages/pseudo.py", "--round", "1"]
    env = {launch.ENDPOINT_VAR: "10.0.0.5:29400", launch.NNODES_VAR: "1:4"}
    argv = launch.torchrun_argv(2, env, cmd)
    assert "--nnodes=1:4" in argv and argv[-3:] == cmd[1:]
    assert argv == launch.torchrun_argv(2, dict(env), list(cmd))  # every node derives the same id
    assert launch.torchrun_argv(2, env, [*cmd[:-1], "2"]) != argv  # another round: another rendezvous
    assert "--rdzv-id=job7" in launch.torchrun_argv(2, {**env, launch.RDZV_ID_VAR: "job7"}, cmd)
    with pytest.raises(ValueError, match="BIRDCLEF_RDZV_ENDPOINT must be host:port"):
        launch.torchrun_argv(2, {**env, launch.ENDPOINT_VAR: "node0"}, cmd)
    with pytest.raises(ValueError, match="BIRDCLEF_NNODES must be the node count"):
        launch.torchrun_argv(2, {launch.ENDPOINT_VAR: "node0:1"}, cmd)


def test_rank_env_points_every_rank_at_the_loopback_store():
    base = {"PATH": "/bin", launch.STORE_FD_VAR: "9", "NCCL_SOCKET_IFNAME": "ib0"}
    env = launch.rank_env(1, 2, 41234, base)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("1", "1", "2")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env[launch.LOOPBACK_VAR]) == ("127.0.0.1", "41234", "1")
    assert launch.STORE_FD_VAR not in env and env["PATH"] == "/bin"  # only rank 0 gets the socket
    assert env["GLOO_SOCKET_IFNAME"] == "lo" and env["NCCL_SOCKET_IFNAME"] == "ib0"  # a user's choice stays
    assert base[launch.STORE_FD_VAR] == "9"  # the caller's mapping is not changed


def test_two_local_launches_side_by_side_get_different_loopback_ports(tmp_path):
    import threading

    script = ("import os, sys, time; env = os.environ; time.sleep(0.5)\n"
              "print(env['MASTER_ADDR'], env['MASTER_PORT'], file=open(sys.argv[1] + env['RANK'], 'w'))")  # fmt: skip
    codes = {}

    def start(name):
        codes[name] = launch.launch_local(2, [sys.executable, "-c", script, str(tmp_path / name)])

    threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == {"a": 0, "b": 0}
    seen = {n: {(tmp_path / f"{n}{r}").read_text().split()[1] for r in (0, 1)} for n in ("a", "b")}
    assert all(len(ports) == 1 for ports in seen.values())  # the ranks of one launch share one store
    assert seen["a"] != seen["b"] and "29500" not in seen["a"] | seen["b"]
    assert (tmp_path / "a0").read_text().split()[0] == "127.0.0.1"


def test_a_failing_rank_stops_the_others_and_gives_its_exit_status():
    script = "import os, sys, time; sys.exit(3) if os.environ['RANK'] == '1' else time.sleep(60)"
    start = time.monotonic()
    assert launch.launch_local(2, [sys.executable, "-c", script], timeout_s=5) == 3
    assert time.monotonic() - start < 10  # rank 0 did not sleep its 60 s


LISTEN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from birdclef import dist

    sys.path.insert(0, {tests!r})
    from test_launch import _listening

    assert dist.init("gloo")
    value = torch.tensor([float(dist.rank_world()[0] + 1)])
    torch.distributed.all_reduce(value)
    listening = _listening(os.getpid())
    torch.distributed.barrier()
    json.dump({{"sum": value.item(), "listening": listening, "port": os.environ["MASTER_PORT"]}},
              open(sys.argv[1] + os.environ["RANK"], "w"))
    dist.finish()
    """
)


@pytest.mark.integration
def test_local_ranks_listen_on_loopback_only(tmp_path):
    script = tmp_path / "listen.py"
    script.write_text(LISTEN_SCRIPT.format(tests=str(Path(__file__).parent)))
    assert launch.launch_local(2, [sys.executable, str(script), str(tmp_path / "rank")]) == 0
    reports = [json.loads((tmp_path / f"rank{r}").read_text()) for r in (0, 1)]
    assert [r["sum"] for r in reports] == [3.0, 3.0]  # the group works: 1 + 2 on both ranks
    assert (int(reports[0]["port"])) in {port for _, port in reports[0]["listening"]}  # rank 0 serves the store
    for report in reports:
        assert report["listening"] and all(_is_loopback(addr) for addr, _ in report["listening"]), report
