"""The flow runner stands down when the code it imported changes on disk (a cold run would read
the new code; a forked one would run the old)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from driftloop.stack.flow_runner import CodeOnDisk


def test_a_changed_or_removed_module_file_is_noticed(tmp_path: Path) -> None:
    (tmp_path / "edited_module.py").write_text("VALUE = 1\n")
    (tmp_path / "removed_module.py").write_text("VALUE = 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        for name in ("edited_module", "removed_module"):
            importlib.import_module(name)
        imported = CodeOnDisk.of_imported((str(tmp_path) + os.sep,))
        assert sorted(Path(path).name for path in imported.times) == [
            "edited_module.py",
            "removed_module.py",
        ]  # only the modules under the roots: nothing of the standard library
        assert imported.changed() is None

        edited = tmp_path / "edited_module.py"
        os.utime(edited, ns=(0, edited.stat().st_mtime_ns + 1_000_000))
        assert imported.changed() == str(edited)
        again = CodeOnDisk.of_imported((str(tmp_path) + os.sep,))
        assert again.changed() is None

        (tmp_path / "removed_module.py").unlink()
        assert again.changed() == str(tmp_path / "removed_module.py")
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("edited_module", "removed_module"):
            sys.modules.pop(name, None)


def test_the_events_that_warm_the_runner_are_what_the_pools_automations_expect() -> None:
    """An automation's trigger, simple or compound, names the events; a name ending in ``*``
    (as Prefect reads ``expect``) is a prefix."""
    from prefect.events.schemas.automations import CompoundTrigger, EventTrigger

    from driftloop.stack.worker import _expected, _matches

    trigger = CompoundTrigger(
        require="any",
        triggers=[
            EventTrigger(expect={"driftloop.drift.detected"}, posture="Reactive", threshold=1),
            EventTrigger(expect={"driftloop.alert.*"}, posture="Reactive", threshold=1),
        ],
    )
    names = frozenset(_expected(trigger))

    assert names == {"driftloop.drift.detected", "driftloop.alert.*"}
    assert _matches("driftloop.drift.detected", names)
    assert _matches("driftloop.alert.firing", names)
    assert not _matches("driftloop.drift.detected.later", names)
    assert not _matches("driftloop.model.promoted", names)
