"""The inference Bento's pinned packages match what the project locks and tests."""

from __future__ import annotations

from importlib.metadata import version

import yaml

from services.inference.bento import service_folder


def test_bentofile_pins_the_installed_versions() -> None:
    bentofile = yaml.safe_load((service_folder() / "bentofile.yaml").read_text())

    pins = dict(line.split("==") for line in bentofile["python"]["packages"])

    assert bentofile["python"]["lock_packages"] is False  # offline builds
    assert pins == {name: version(name) for name in pins}
