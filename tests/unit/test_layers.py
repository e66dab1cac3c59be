"""Every module of the driftloop package has its place in the import contracts."""

import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# The operational layer (its own contract) and the entry point that calls it.
OPERATIONAL = {"driftloop.cli", "driftloop.stack", "driftloop.__main__"}


def contracts() -> dict[str, dict]:
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_every_module_is_core_or_operational() -> None:
    package = PROJECT / "src" / "driftloop"
    modules = {
        f"driftloop.{path.stem}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    core = set(contracts()["core"]["source_modules"])
    assert modules - OPERATIONAL == core, (
        "place each module of src/driftloop in pyproject.toml's import contracts: "
        f"not listed {sorted(modules - OPERATIONAL - core)}, gone {sorted(core - modules)}"
    )


def test_the_core_is_forbidden_every_layer_above_it() -> None:
    above = set(contracts()["layers"]["layers"])
    assert above == {"driftloop.cli", "driftloop.stack", "flows", "services"}
    assert set(contracts()["core"]["forbidden_modules"]) == above
