"""`driftloop demo`, the README's main job, run as a new user runs it: in a fresh copy of the
project (the files git tracks or would track, no .venv, no .driftloop), through the README's
command `python3 scripts/dev.py demo`, which installs the environment first. Only the ports are
moved to free ones, so the test does not collide with anything on the machine."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftloop.stack.processes import port_in_use
from tests.commands import stack_env, stack_ports
from tests.polling import eventually

PROJECT = Path(__file__).resolve().parents[2]


def fresh_copy(target: Path) -> Path:
    """The project's files as a clone of this tree would have them (committed or not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = PROJECT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
            destination.chmod(source.stat().st_mode & 0o777)
    return target


@pytest.mark.timeout(900)
def test_demo_closes_the_loop_from_a_fresh_copy(tmp_path: Path) -> None:
    clone = fresh_copy(tmp_path / "driftloop")
    ports = stack_ports()
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "scripts/dev.py", "demo"],
        cwd=clone,
        env=stack_env(ports),
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    elapsed = time.monotonic() - started
    out = result.stdout

    assert result.returncode == 0, out[-5000:] + result.stderr[-3000:]
    assert "[dev] environment ready" in out  # it installed its own environment first
    assert "batch 'corrupted' rejected, main unchanged" in out
    assert "in distribution: no drift declared, no retrain" in out
    # Each calm window: performance estimated before its labels, then realized beside it.
    estimated = re.findall(r"estimated ROC AUC ([\d.]+) \[([\d.]+), ([\d.]+)\]", out)
    realized = re.findall(r"labels in: realized ROC AUC ([\d.]+) \((\w+) the estimate", out)
    assert len(estimated) == 3 and len(realized) == 3, out[-4000:]
    for (value, lower, upper), (actual, where) in zip(estimated, realized, strict=True):
        assert float(lower) < float(value) < float(upper)
        assert where == ("inside" if float(lower) <= float(actual) <= float(upper) else "outside")
    assert "the monitor declared drift" in out
    # The timeline has every step, each after the onset, in the loop's order.
    offsets = {}
    for label in (
        "driftloop.drift.detected in Prefect",
        "retrain flow run started",
        "new model version serving",
    ):
        found = re.search(re.escape(label) + r"\s+\d\d:\d\d:\d\d\s+\+\s*([\d.]+) s", out)
        assert found, f"no time for {label!r} in the timeline:\n{out[-3000:]}"
        offsets[label] = float(found.group(1))
    assert list(offsets.values()) == sorted(offsets.values())
    f1 = re.search(r"F1 on 2,000 fresh drifted transactions: \w+ ([\d.]+) -> \w+ ([\d.]+)", out)
    assert f1 and float(f1.group(2)) > float(f1.group(1))
    assert "the loop closed" in out
    report = clone / ".driftloop" / "demo" / "drift-report.html"
    assert report.exists() and b"Data Drift" in report.read_bytes()
    # Everything stopped. (How long it took is reported, not judged: timings are not tests.)
    assert [name for name, port in ports.items() if port_in_use("127.0.0.1", port)] == []
    print(f"the demo took {elapsed:.0f} s from a fresh copy, install included")  # noqa: T201


def test_demo_names_a_taken_port(tmp_path: Path) -> None:
    ports = stack_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["prefect-server"]))
        taken.listen()
        result = subprocess.run(
            [str(Path(sys.executable).with_name("driftloop")), "demo"],
            cwd=tmp_path,
            env=stack_env(ports),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert result.returncode == 1
    assert (
        f"port {ports['prefect-server']} on 127.0.0.1 is taken, so prefect-server" in result.stderr
    )
    assert "DRIFTLOOP_PREFECT__API_URL" in result.stderr


def test_an_interrupted_demo_stops_everything_and_does_not_claim_success(tmp_path: Path) -> None:
    ports = stack_ports()
    output = tmp_path / "demo-output.txt"
    with output.open("wb") as sink:
        demo = subprocess.Popen(
            [str(Path(sys.executable).with_name("driftloop")), "demo"],
            cwd=tmp_path,
            env=stack_env(ports),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def lakefs_healthy() -> bool:
            if demo.poll() is not None:
                raise RuntimeError(f"the demo ended early:\n{output.read_text()}")
            return "✓ lakefs healthy" in output.read_text()

        eventually(lakefs_healthy, "the demo's lakeFS to be healthy", timeout=180)
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        demo.wait(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)

    text = output.read_text()
    assert demo.returncode == 1, text
    assert "interrupted before the loop closed" in text
    assert [name for name, port in ports.items() if port_in_use("127.0.0.1", port)] == []
