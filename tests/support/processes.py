"""Long-lived child processes (nodes, `counters up`) that cannot outlive the test run.

A pytest killed by SIGKILL, a CI cancel or an OOM kill runs no teardown; without help its
node processes would keep their ports and data dirs, and the next run would find them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen(argv, **popen) for a child that dies with this process.

    The child leads a session of its own (so a ^C aimed at pytest does not reach it, and
    os.killpg(child.pid, ...) reaches whatever it forks), and asks the kernel to SIGKILL it
    when its parent dies (prctl PR_SET_PDEATHSIG). Linux only.

    The kernel watches the *thread* that forked, so call this from the main thread: a child
    spawned from a worker thread would die when that thread ends. Grandchildren are not
    covered: a child that forks long-lived processes must set their death signal itself.
    """
    if not sys.platform.startswith("linux"):
        raise RuntimeError("spawn() needs Linux (prctl PR_SET_PDEATHSIG)")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("spawn() from the main thread: the child would die with this thread")
    if "preexec_fn" in popen or "start_new_session" in popen:
        raise TypeError("spawn() sets preexec_fn and start_new_session itself")
    return subprocess.Popen(
        argv, start_new_session=True, preexec_fn=_die_with(os.getpid()), **popen
    )


def _die_with(parent: int) -> Callable[[], None]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not after

    def in_child() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child
