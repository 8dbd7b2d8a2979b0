"""What the tests that start a real server share: a free local port to serve on, and stopping the
server process at the end."""
from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, seconds: float) -> None:
    """Terminate a server the test started; kill it if it has not stopped within `seconds`."""
    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
