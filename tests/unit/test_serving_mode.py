"""Which versions the inference service answers with (following or pinned), and its state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftloop.serving_mode import (
    PACKAGED_FILE,
    StateError,
    bento_home,
    choose_mode,
    packaged_models,
    prepare_state,
    read_packaged,
    write_packaged,
)
from driftloop.settings import Settings, get_settings

MODEL = "transactions-classifier"
TAG = f"{MODEL}:v1"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test's settings come only from ``settings(...)``; the environment is restored."""
    for name in list(os.environ):
        if name.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", os.environ.copy())


def settings(**values: str) -> Settings:
    """Settings from exactly ``values`` (``storage__registry_url=...``) and defaults."""
    for name in [name for name in os.environ if name.startswith("DRIFTLOOP_")]:
        del os.environ[name]
    os.environ.update({f"DRIFTLOOP_{name.upper()}": value for name, value in values.items()})
    return get_settings()


def test_a_bento_records_its_models_in_its_own_files(tmp_path: Path) -> None:
    write_packaged(tmp_path, [TAG, "wine-classes:v7"])

    assert read_packaged(tmp_path) == {MODEL: TAG, "wine-classes": "wine-classes:v7"}
    assert read_packaged(tmp_path / "elsewhere") == {}  # not a Bento: nothing packaged


def test_without_a_registry_a_packaged_model_is_pinned_and_says_why(tmp_path: Path) -> None:
    mode = choose_mode(settings(home=str(tmp_path / "home")), {MODEL: TAG})

    assert mode.mode == "pinned"
    assert "no registry is configured" in mode.reason
    assert mode.as_dict(MODEL) == {"mode": "pinned", "reason": mode.reason, "packaged": TAG}


def test_a_configured_registry_is_followed_with_the_packaged_model_as_stand_in(
    tmp_path: Path,
) -> None:
    by_url = choose_mode(
        settings(storage__registry_url="postgresql+psycopg://u@db/registry"), {MODEL: TAG}
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry.sqlite").touch()
    by_file = choose_mode(settings(home=str(home)), {MODEL: TAG})

    assert by_url.mode == by_file.mode == "following"
    assert "DRIFTLOOP_STORAGE__REGISTRY_URL" in by_url.reason
    assert str(home / "registry.sqlite") in by_file.reason
    assert by_file.packaged == {MODEL: TAG}


def test_nothing_packaged_and_no_registry_waits_for_one(tmp_path: Path) -> None:
    mode = choose_mode(settings(home=str(tmp_path)), {})

    assert mode.mode == "following" and "no packaged model" in mode.reason


def test_the_mode_setting_wins_and_pinned_needs_a_packaged_model(tmp_path: Path) -> None:
    registry = "postgresql+psycopg://u@db/registry"
    pinned = choose_mode(
        settings(serving__mode="pinned", storage__registry_url=registry), {MODEL: TAG}
    )
    following = choose_mode(settings(serving__mode="following", home=str(tmp_path)), {})

    assert (pinned.mode, following.mode) == ("pinned", "following")
    assert pinned.reason == "DRIFTLOOP_SERVING__MODE=pinned"
    with pytest.raises(StateError, match="carries no packaged model"):
        choose_mode(settings(serving__mode="pinned"), {})


def test_model_tag_setting_adds_or_overrides_a_packaged_model(tmp_path: Path) -> None:
    write_packaged(tmp_path, [TAG])

    assert packaged_models(settings(), tmp_path, [MODEL]) == {MODEL: TAG}
    overridden = packaged_models(settings(serving__model_tag=f"{MODEL}:v2"), tmp_path, [MODEL])
    assert overridden == {MODEL: f"{MODEL}:v2"}
    with pytest.raises(StateError, match="DRIFTLOOP_SERVING__MODEL_TAG=other:v1 names model"):
        packaged_models(settings(serving__model_tag="other:v1"), tmp_path, [MODEL])
    with pytest.raises(StateError, match="carries transactions-classifier, which its project"):
        packaged_models(settings(), tmp_path, ["wine-classes"])


def test_a_bento_keeps_its_state_beside_the_bentoml_store_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bento_src = tmp_path / "bento" / "src"
    bento_src.mkdir(parents=True)
    write_packaged(bento_src, [TAG])
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "store"))

    assert bento_home(settings(), bento_src).home == tmp_path / "store" / "driftloop"
    # Served from source (no record of packaged models), the home stays where it was.
    assert bento_home(settings(), tmp_path).home == Path(".driftloop")
    # Said out loud, the home is the one given.
    assert bento_home(settings(home="/srv/state"), bento_src).home == Path("/srv/state")
    assert (bento_src / PACKAGED_FILE).is_file()


def test_state_folders_are_created_and_a_bad_one_names_its_setting(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    mode = choose_mode(settings(home=str(home)), {MODEL: TAG})

    created = prepare_state(settings(home=str(home)), mode)

    assert home.is_dir() and (home / "spool" / "predictions").is_dir()
    assert created == [home, home / "spool" / "predictions"]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StateError, match="set DRIFTLOOP_HOME to a folder") as raised:
        prepare_state(settings(home=str(blocker / "home")), mode)
    assert "Not a directory" in str(raised.value)
    with pytest.raises(StateError, match="set DRIFTLOOP_SERVING__SPOOL_DIR"):
        prepare_state(
            settings(
                home=str(home),
                serving__spool_dir=str(blocker),
                storage__prediction_log_url="postgresql+psycopg://u@db/log",
            ),
            mode,
        )


def test_with_every_database_elsewhere_only_the_spool_is_written(tmp_path: Path) -> None:
    configured = settings(
        home=str(tmp_path / "unused"),
        serving__spool_dir=str(tmp_path / "spool"),
        storage__prediction_log_url="postgresql+psycopg://u@db/log",
        storage__registry_url="postgresql+psycopg://u@db/registry",
    )

    created = prepare_state(configured, choose_mode(configured, {}))

    assert created == [tmp_path / "spool"]
    assert not (tmp_path / "unused").exists()
