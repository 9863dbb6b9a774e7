"""Whose process is this pid? A pid alone is not an identity: the kernel hands a dead process's number to the
next one. A run records its training process's pid together with the process's start time (Linux: field 22 of
/proc/PID/stat, clock ticks since boot), and a pid counts as the run's process only while both still match, so a
reused pid is never taken for a live run and never signalled. Imports nothing heavy.
"""

from __future__ import annotations

import os


def start_time(pid: int | None) -> int | None:
    """The process's start time in clock ticks since boot, or None where /proc cannot tell (not Linux, gone)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except (OSError, ValueError):
        return None
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


def seconds_running(pid: int | None) -> float | None:
    """How long the process has been running (from /proc: uptime less its start), or None where it cannot tell."""
    ticks = start_time(pid)
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK")) if ticks is not None else None
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, started: int | None = None) -> bool:
    """Is `pid` running and, when its start time `started` was recorded, still the same process?"""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    if not os.path.isdir("/proc/self"):
        return True  # no /proc (macOS): the pid is all there is to go by
    now = start_time(pid)
    if now is None:
        return False  # a zombie, or gone between the two looks
    return started is None or now == started
