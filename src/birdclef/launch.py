"""Starting a stage's ranks: on one machine with a store on 127.0.0.1 only, across machines under torchrun.

torchrun's single-node modes host their store on every interface (``*:29500`` or a free port of ``::``), reachable
from the network without authentication; its fixed default port makes two stages side by side collide. The local
launcher here binds the store's socket to the loopback interface itself and hands it to rank 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

ENDPOINT_VAR = "BIRDCLEF_RDZV_ENDPOINT"
NNODES_VAR = "BIRDCLEF_NNODES"
RDZV_ID_VAR = "BIRDCLEF_RDZV_ID"
STORE_FD_VAR = "BIRDCLEF_STORE_FD"  # rank 0 of a local launch: the listening socket its store serves on
LOOPBACK_VAR = "BIRDCLEF_LOOPBACK_STORE"  # every rank of a local launch: join the 127.0.0.1 store
LOOPBACK = "127.0.0.1"
STORE_TIMEOUT = datetime.timedelta(minutes=10)  # how long a rank waits for the store (rank 0 importing torch)


def relaunch(nproc: int) -> None:
    """Run the current command as ``nproc`` ranks unless it already is one (``LOCAL_RANK`` set); returns for 1.

    One machine (the default): :func:`launch_local` starts the ranks, their store on 127.0.0.1 at a free port, so
    nothing is exposed to the network and two stages side by side never clash. Several machines:
    ``BIRDCLEF_RDZV_ENDPOINT=host:port`` and ``BIRDCLEF_NNODES`` (optionally ``BIRDCLEF_RDZV_ID``) in the
    environment of the same command on every node re-execute it under torchrun's c10d rendezvous at that endpoint,
    ``nproc`` ranks a node, 1 included (:func:`torchrun_argv`); that store listens on every interface of its host,
    unauthenticated: a trusted cluster network only. A job started with torchrun by hand is left as it is.

    Raises:
        ValueError: a malformed multi-node setting (named).
    """
    if "LOCAL_RANK" in os.environ:
        return
    cmd = [sys.executable, *sys.argv]
    if os.environ.get(ENDPOINT_VAR):  # several nodes, even with one rank each
        argv = torchrun_argv(max(nproc, 1), os.environ, cmd)
        os.execv(argv[0], argv)
    if nproc > 1:
        sys.exit(launch_local(nproc, cmd))


def torchrun_argv(nproc: int, env: Mapping[str, str], cmd: Sequence[str]) -> list[str]:
    """The torchrun command of a multi-node rank: c10d rendezvous at ``env[BIRDCLEF_RDZV_ENDPOINT]``.

    Args:
        nproc: ranks on this node.
        env: the environment: ``BIRDCLEF_RDZV_ENDPOINT`` (``host:port``, one node's address that every node
            reaches), ``BIRDCLEF_NNODES`` (an integer > 0, or ``min:max``), ``BIRDCLEF_RDZV_ID`` (optional; by
            default a fingerprint of the command, the same on every node that runs the same stage command).
        cmd: ``[python, script, args...]``.

    Returns:
        ``[python, -m, torch.distributed.run, --nnodes=..., ..., script, args...]``.

    Raises:
        ValueError: a missing or malformed setting, named.
    """
    endpoint, nnodes = env.get(ENDPOINT_VAR, ""), env.get(NNODES_VAR, "")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{ENDPOINT_VAR} must be host:port, not {endpoint!r}")
    if not all(part.isdigit() and int(part) > 0 for part in nnodes.split(":")):
        raise ValueError(f"{NNODES_VAR} must be the node count (or min:max) when {ENDPOINT_VAR} is set, not {nnodes!r}")
    rdzv_id = env.get(RDZV_ID_VAR) or f"birdclef-{_digest(cmd[1:])}"
    return [
        cmd[0], "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}", *cmd[1:],
    ]  # fmt: skip


def rank_env(rank: int, world: int, port: int, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of rank ``rank`` of a local launch: torchrun's variables, the loopback store and interfaces.

    ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` pin the collectives' own sockets to the loopback interface
    (unless set already); ``OMP_NUM_THREADS`` defaults to 1 as under torchrun (stages set their torch threads).
    """
    env = dict(base)
    env.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), GROUP_RANK="0",
        MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port), **{LOOPBACK_VAR: "1"},
    )  # fmt: skip
    env.pop(STORE_FD_VAR, None)
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        env.setdefault(name, _loopback_interface())
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def launch_local(nproc: int, cmd: Sequence[str], timeout_s: float = 30.0) -> int:
    """Run ``cmd`` as ``nproc`` ranks on this machine, their store on 127.0.0.1 at a free port; the first failure.

    The launcher binds the store's listening socket itself (127.0.0.1, port 0: the kernel's free port, held from
    the start, so two launches side by side cannot pick the same one) and hands it to rank 0. When one rank
    fails the others are stopped (SIGTERM, then SIGKILL after ``timeout_s``); SIGINT / SIGTERM sent to the
    launcher reach every rank; a rank dies with the launcher (``PR_SET_PDEATHSIG``), so a killed job leaves no
    orphan holding its port or GPU.

    Args:
        nproc: number of ranks.
        cmd: the command every rank runs.
        timeout_s: grace period before stopped ranks are killed.

    Returns:
        0 when every rank succeeded, else the exit status of the first rank that failed.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(128)
    port, fd = listener.getsockname()[1], listener.fileno()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(nproc):
            env = rank_env(rank, nproc, port, os.environ)
            if rank == 0:
                env[STORE_FD_VAR] = str(fd)
            procs.append(subprocess.Popen(list(cmd), env=env, pass_fds=(fd,) if rank == 0 else (),
                                          preexec_fn=_die_with_parent))  # fmt: skip
    finally:
        listener.close()  # rank 0 holds its own copy
    forward = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        forward = {sig: signal.signal(sig, lambda s, _f: [p.send_signal(s) for p in procs if p.poll() is None])
                   for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        return _wait_all(procs, timeout_s)
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed or all(c == 0 for c in codes):
            break
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return failed[0] if failed else 0


def _die_with_parent() -> None:
    # Linux: SIGKILL this rank when the launcher dies (a SIGKILLed `dvc repro` must not leave ranks behind).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return next((name for name in ("lo", "lo0") if name in names), "lo")


def loopback_store(rank: int, world: int) -> Any:
    """The process group's store for rank ``rank`` of a local launch: rank 0 serves it on the launcher's socket.

    Args:
        rank: this rank. world: the number of ranks.

    Returns:
        A ``torch.distributed.TCPStore`` on 127.0.0.1 at ``MASTER_PORT`` (rank 0: listening on the inherited
        ``BIRDCLEF_STORE_FD``; torch's own server would listen on every interface).
    """
    from torch.distributed import TCPStore

    port = int(os.environ["MASTER_PORT"])
    if rank == 0:
        fd = int(os.environ[STORE_FD_VAR])
        return TCPStore(LOOPBACK, port, world, is_master=True, master_listen_fd=fd, timeout=STORE_TIMEOUT)
    return TCPStore(LOOPBACK, port, world, is_master=False, timeout=STORE_TIMEOUT)


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:16]
