"""What /proc says about a process: its CPU time, its peak resident set, its children."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its ')' splits cleanly.
    return text.rpartition(")")[2].split()


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of ``pid`` (plus its reaped children's), in seconds; 0.0 once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # Index 0 is the state (field 3), so utime (field 14) is index 11.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` of ``pid`` in MB; ``None`` once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None
