"""A component's memory and CPU as `driftloop status` shows them: its processes and theirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from driftloop.stack.processes import usage

# A process that holds 80 MB, works for a moment, says so, and waits.
HOLDER = (
    "import sys, time\n"
    "held = bytearray(80 << 20)\n"
    "for index in range(0, len(held), 4096): held[index] = 1\n"
    "deadline = time.process_time() + 0.3\n"
    "while time.process_time() < deadline: pass\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_usage_counts_the_memory_and_cpu_of_a_process_and_those_below_it(tmp_path: Path) -> None:
    # A parent whose child does the holding: the child is counted under the parent.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLDER!r}])",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: both stop together
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        whole = usage([parent.pid])
        own = usage([os.getpid()])
        time.sleep(0.1)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()

    assert whole.processes == 2
    assert whole.rss_bytes > 80 << 20
    assert 80 << 20 < whole.pss_bytes <= whole.rss_bytes  # nothing of the 80 MB is shared
    assert whole.cpu_seconds >= 0.3
    assert own.processes >= 3 and own.rss_bytes > whole.rss_bytes  # this test's, and below it
    assert usage([parent.pid]).processes == 0  # gone: nothing counted


# 80 MB held, then a fork: the child holds the same pages until it writes to them.
SHARER = (
    "import os, sys, time\n"
    "held = bytearray(80 << 20)\n"
    "for index in range(0, len(held), 4096): held[index] = 1\n"
    "if os.fork() == 0: time.sleep(60)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_pages_a_fork_shares_count_twice_in_rss_and_once_in_pss() -> None:
    sharing = subprocess.Popen(
        [sys.executable, "-c", SHARER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert sharing.stdout is not None and sharing.stdout.readline().strip() == "ready"
        both = usage([sharing.pid])
    finally:
        os.killpg(sharing.pid, signal.SIGKILL)
        sharing.wait()

    assert both.processes == 2
    assert both.rss_bytes > 160 << 20  # each process shows the 80 MB
    assert 80 << 20 < both.pss_bytes < 120 << 20  # the machine holds them once
