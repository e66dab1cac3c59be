"""The Bento stands on its own: built, exported, imported into an empty BentoML store and served
with `bentoml serve` by a Python environment that has only what the Bento lists (no checkout, no
driftloop state, no registry); and the same Bento beside a registry follows its promotions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.prediction_log import PredictionLog
from driftloop.project import example_project
from driftloop.serving import frame_records, load_version
from driftloop.stack.processes import Component, free_port, start_component
from services.inference.bento import build_bento, export_bento
from tests.integration.test_inference import MODEL, RECORD, Home, url
from tests.polling import eventually

SPEC = load_spec("transactions")
BIN = Path(sys.executable).parent
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


class Bento:
    """A Bento of the first of ``home``'s versions, built in the tests' store, and exported."""

    def __init__(self, home: Home, folder: Path) -> None:
        self.home = home
        self.model = f"{MODEL}:{home.versions[0]}"
        self.bentoml_home = Path(os.environ["BENTOML_HOME"])
        self.tag = build_bento(
            [self.model], self.bentoml_home, example_project("transactions").root
        )
        self.archive = export_bento(self.tag, self.bentoml_home, folder)
        self.path = self.bentoml_home / "bentos" / self.tag.replace(":", "/")


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Bento:
    home = Home(tmp_path_factory.mktemp("bento-registry"))
    home.registry.promote(MODEL, home.versions[0], "test")
    return Bento(home, tmp_path_factory.mktemp("bento-archive"))


class Elsewhere:
    """Another machine, as near as this one gets: a new folder with an empty BentoML store and a
    Python environment holding the Bento's driftloop wheel and the packages it lists (linked
    from this environment, without the checkout or its editable install), and an environment
    of variables with nothing of driftloop's in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bentoml_home = root / "bentoml"
        self.workdir = root / "work"
        self.workdir.mkdir()
        self.python = root / "venv" / "bin" / "python"
        self.env = {
            "PATH": f"{self.python.parent}{os.pathsep}/usr/bin:/bin",
            "HOME": str(root),
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "true",
            "LANG": "C.UTF-8",
        }
        self.run(str(BIN / "uv"), "venv", "-q", "--python", str(BASE_PYTHON), str(root / "venv"))
        site_packages = next((root / "venv" / "lib").glob("python3.*/site-packages"))
        # The packages of this environment, as a plain path: its .pth files (the editable
        # install of the checkout among them) are not read from there.
        ours = next(Path(sys.prefix, "lib").glob("python3.*/site-packages"))
        (site_packages / "packages-of-the-test-environment.pth").write_text(f"{ours}\n")

    def run(self, *command: str) -> str:
        finished = subprocess.run(
            command, env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=300
        )
        assert finished.returncode == 0, finished.stdout + finished.stderr
        return finished.stdout

    def install(self, bento: Path) -> None:
        """Install the wheels the Bento carries (its own packages are linked already)."""
        (wheel,) = (bento / "env" / "python" / "wheels").glob("driftloop-*.whl")
        self.run(
            str(BIN / "uv"), "pip", "install", "-q", "--offline", "--no-deps",
            "--python", str(self.python), str(wheel),
        )  # fmt: skip

    def serve(self, bento_tag: str, log_name: str, **env: str) -> Component:
        port = free_port()
        log_path = self.root / log_name
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [str(self.python), "-m", "bentoml", "serve", bento_tag, "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**self.env, **env},
            cwd=self.workdir,
            start_new_session=True,
        )
        return Component(
            "inference", process, log_path, f"http://127.0.0.1:{port}/readyz", log_file
        )


def serve_bento(bento: Bento) -> Component:
    """`bentoml serve` the Bento from the tests' store, over the home of its registry."""
    port = free_port()
    log_path = bento.home.path / "following.log"
    command = [str(BIN / "bentoml"), "serve", bento.tag, "--port", str(port)]
    env = {
        "DRIFTLOOP_HOME": str(bento.home.path),
        "DRIFTLOOP_SERVING__MODEL_POLL_SECONDS": "0.5",
        "BENTOML_DO_NOT_TRACK": "true",
    }
    return start_component(
        "inference", command, health_url=f"http://127.0.0.1:{port}/readyz", log_path=log_path,
        env=env, cwd=bento.home.path,
    )  # fmt: skip


@pytest.fixture(scope="module")
def elsewhere(bento: Bento, tmp_path_factory: pytest.TempPathFactory) -> Elsewhere:
    machine = Elsewhere(tmp_path_factory.mktemp("elsewhere"))
    assert "imported" in machine.run(
        str(machine.python), "-m", "bentoml", "import", str(bento.archive)
    )
    machine.install(machine.bentoml_home / "bentos" / bento.tag.replace(":", "/"))
    return machine


@pytest.fixture(scope="module")
def standalone(elsewhere: Elsewhere, bento: Bento) -> Iterator[Component]:
    component = elsewhere.serve(bento.tag, "standalone.log")
    started = time.monotonic()
    try:
        component.wait_healthy(timeout=90)
        component.seconds_to_ready = time.monotonic() - started  # type: ignore[attr-defined]
        yield component
    finally:
        component.stop()


def records(count: int, seed: int) -> list[dict[str, object]]:
    return frame_records(generate_transactions(count, seed=seed), [f.name for f in SPEC.features])


def test_the_imported_bento_serves_its_packaged_model_with_no_driftloop_state(
    standalone: Component, elsewhere: Elsewhere, bento: Bento
) -> None:
    sent = records(25, seed=11)

    model = httpx.get(url(standalone, "/model")).json()
    answers = httpx.post(url(standalone, "/predict"), json=sent).json()

    assert standalone.seconds_to_ready < 30  # type: ignore[attr-defined]
    assert model["version"] == bento.home.versions[0]
    assert model["serving"]["mode"] == "pinned"
    assert "no registry is configured" in model["serving"]["reason"]
    assert model["serving"]["packaged"] == bento.model
    assert {answer["model_version"] for answer in answers} == {bento.home.versions[0]}
    # The registry's model, loaded here from the store the Bento was built in, scores the same.
    expected = load_version(bento.model).score(sent).tolist()
    assert [answer["score"] for answer in answers] == expected
    # What answered is the Bento's wheel, not this checkout.
    where = elsewhere.run(str(elsewhere.python), "-c", "import services; print(services.__file__)")
    assert where.startswith(str(elsewhere.root / "venv"))


def test_feedback_and_metrics_work_against_the_state_the_bento_created(
    standalone: Component, elsewhere: Elsewhere, bento: Bento
) -> None:
    answer = httpx.post(url(standalone, "/predict"), json=RECORD).json()

    feedback = httpx.post(
        url(standalone, "/feedback"), json={"prediction_id": answer["prediction_id"], "label": 1}
    )
    metrics = httpx.get(url(standalone, "/metrics")).text

    assert feedback.status_code == 200 and feedback.json()["status"] == "recorded"
    # The prediction log is a new SQLite file beside the BentoML store, not inside the Bento.
    state = elsewhere.bentoml_home / "driftloop"
    prediction_log = PredictionLog(f"sqlite:///{state / 'predictions.sqlite'}")
    row = prediction_log.get(answer["prediction_id"])
    prediction_log.dispose()
    assert row is not None and (row["model_version"], row["true_label"]) == (
        bento.home.versions[0],
        1.0,
    )
    assert (state / "spool" / "predictions").is_dir()
    imported = elsewhere.bentoml_home / "bentos" / bento.tag.replace(":", "/")
    assert not [p for p in imported.rglob("*") if p.suffix == ".sqlite" or p.name == "spool"]
    counted = [line for line in metrics.splitlines() if line.startswith("driftloop_predictions")]
    assert any(f'model="{MODEL}"' in line for line in counted), metrics
    assert "bentoml_service_request_total" in metrics


def test_a_state_folder_it_cannot_create_stops_it_with_one_line_naming_the_setting(
    elsewhere: Elsewhere, bento: Bento
) -> None:
    blocker = elsewhere.root / "a-file"
    blocker.write_text("not a folder")

    component = elsewhere.serve(bento.tag, "unwritable.log", DRIFTLOOP_HOME=str(blocker / "home"))
    try:
        exited = eventually(
            lambda: component.process.poll() is not None, "bentoml serve to stop", timeout=120
        )
    finally:
        component.stop()

    log = component.log_path.read_text()
    assert exited
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, log
    assert f"cannot keep its state in {blocker / 'home'} (Not a directory)" in errors[0]
    assert "set DRIFTLOOP_HOME" in errors[0]
    assert "Traceback" not in log and "sqlalchemy" not in log.lower()


def test_the_same_bento_beside_a_registry_follows_its_promotions(bento: Bento) -> None:
    component = serve_bento(bento)
    try:
        component.wait_healthy(timeout=90)
        first = httpx.get(url(component, "/model")).json()
        bento.home.registry.promote(MODEL, bento.home.versions[1], "test")
        swapped = eventually(
            lambda: httpx.get(url(component, "/model")).json()["version"] == bento.home.versions[1],
            "the promoted version to answer",
            timeout=30,
        )
    finally:
        bento.home.registry.promote(MODEL, bento.home.versions[0], "test")
        component.stop()

    assert first["version"] == bento.home.versions[0]
    assert first["serving"]["mode"] == "following"
    assert "registry.sqlite exists" in first["serving"]["reason"]
    assert swapped


def test_the_bentos_generated_dockerfile_passes_hadolint_and_runs_the_service_unprivileged(
    bento: Bento,
) -> None:
    dockerfile = bento.path / "env" / "docker" / "Dockerfile"

    linted = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True
    )

    assert linted.returncode == 0, linted.stdout + linted.stderr
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    assert "USER 10001" in lines
    assert "EXPOSE 3000" in lines
    assert any(line.startswith("ENTRYPOINT") for line in lines)
    # The model the container pins is in the Bento's own files, not only in its envs.
    packaged = bento.path / "src" / "driftloop-packaged.json"
    assert bento.model in packaged.read_text()
