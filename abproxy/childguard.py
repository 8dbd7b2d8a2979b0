"""Run a command that dies with its parent: `python -m abproxy.childguard PARENT_PID COMMAND...`.

`abproxy serve` starts Streamlit through this: on Linux the process asks the kernel to SIGKILL it
when its parent dies (prctl PR_SET_PDEATHSIG, kept across exec), so even a `kill -9` of serve
never leaves Streamlit holding the port. If the parent is already gone it does not start at all.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    die_with_parent()
    if os.getppid() != parent:   # the parent died before the guard was set
        sys.exit(1)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
