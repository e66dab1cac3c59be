"""The lakeFS-compatible server's storage engine on its own (no HTTP): branches and refs, staging,
commits, and the three-way merge, as lakeFS has them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.lakefs_local.store import (
    BadRequest,
    Conflict,
    Entry,
    Forbidden,
    NotFound,
    Store,
    _three_way,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    found = Store(tmp_path / "lakefs")
    found.create_repository("repo", "local://repo", "main", read_only=False, committer="test")
    return found


def put(store: Store, branch: str, path: str, content: bytes) -> None:
    """Stage ``content`` at ``path`` on ``branch``, as an upload does."""
    checksum = hashlib.sha256(content).hexdigest()
    upload = store.upload_root / f"{checksum}.part"
    upload.write_bytes(content)
    store.adopt_blob(upload, checksum)
    store.put_object(
        "repo", branch, Entry(path, checksum, len(content), 0, "application/octet-stream")
    )


def read(store: Store, ref: str, path: str) -> bytes:
    _, entry = store.stat_object("repo", ref, path)
    return store.blob_path(entry.checksum).read_bytes()


def commit(store: Store, branch: str, message: str = "change") -> str:
    return store.commit("repo", branch, message, {}, "test", None, allow_empty=False).id


def merge(store: Store, source: str, destination: str = "main", strategy: str = "") -> str:
    return store.merge(
        "repo", source, destination, "", {}, strategy, "test", allow_empty=False, squash=False
    ).id


def entry(path: str, content: str) -> Entry:
    return Entry(path, hashlib.sha256(content.encode()).hexdigest(), len(content), 0, "text/plain")


# -- refs -------------------------------------------------------------------------------------


def test_a_branch_starts_at_its_source_and_moves_only_by_its_own_commits(store: Store) -> None:
    put(store, "main", "a.txt", b"one")
    first = commit(store, "main")
    assert store.create_branch("repo", "feature", "main", hidden=False, force=False) == first

    put(store, "feature", "a.txt", b"two")
    second = commit(store, "feature")

    assert store.get_branch("repo", "main").commit_id == first
    assert store.get_branch("repo", "feature").commit_id == second
    assert read(store, "main", "a.txt") == b"one" and read(store, "feature", "a.txt") == b"two"
    assert read(store, first, "a.txt") == b"one"  # a commit id is a ref too


def test_branch_names_and_the_default_branch_are_guarded(store: Store) -> None:
    with pytest.raises(BadRequest, match="must match"):
        store.create_branch("repo", "feature/x", "main", hidden=False, force=False)
    store.create_branch("repo", "feature", "main", hidden=False, force=False)
    with pytest.raises(Conflict, match="already exists"):
        store.create_branch("repo", "feature", "main", hidden=False, force=False)
    with pytest.raises(Forbidden):
        store.delete_branch("repo", "main")
    with pytest.raises(NotFound):
        store.get_branch("repo", "nope")


def test_staged_changes_are_per_branch_and_a_reset_drops_them(store: Store) -> None:
    store.create_branch("repo", "feature", "main", hidden=False, force=False)
    put(store, "feature", "x.txt", b"x")
    put(store, "feature", "keep/y.txt", b"y")

    assert [c.path for c in store.diff_branch("repo", "feature")] == ["keep/y.txt", "x.txt"]
    assert store.diff_branch("repo", "main") == []
    store.reset_branch("repo", "feature", "x.txt", prefix=False)
    assert [c.path for c in store.diff_branch("repo", "feature")] == ["keep/y.txt"]
    store.reset_branch("repo", "feature", None, prefix=False)
    with pytest.raises(BadRequest, match="no changes"):
        commit(store, "feature")


def test_the_log_lists_ancestors_newest_first(store: Store) -> None:
    ids = []
    for n in range(3):
        put(store, "main", "n.txt", str(n).encode())
        ids.append(commit(store, "main", f"commit {n}"))

    log, has_more = store.log("repo", "main", "", 2, False, False, [], [], stop_at=None, since=None)

    assert [c.id for c in log] == [ids[2], ids[1]] and has_more


# -- merge ------------------------------------------------------------------------------------


def test_changes_on_both_sides_to_different_paths_merge_with_both_parents(store: Store) -> None:
    put(store, "main", "shared.txt", b"base")
    commit(store, "main")
    store.create_branch("repo", "feature", "main", hidden=False, force=False)
    put(store, "feature", "theirs.txt", b"theirs")
    source = commit(store, "feature")
    put(store, "main", "ours.txt", b"ours")
    destination = commit(store, "main")

    merged = merge(store, "feature")

    assert store.get_commit("repo", merged).parents == [destination, source]
    assert read(store, "main", "theirs.txt") == b"theirs"
    assert read(store, "main", "ours.txt") == b"ours"
    assert read(store, "main", "shared.txt") == b"base"


def test_a_path_changed_on_both_sides_conflicts_unless_a_strategy_decides(store: Store) -> None:
    put(store, "main", "f.txt", b"base")
    commit(store, "main")
    store.create_branch("repo", "feature", "main", hidden=False, force=False)
    put(store, "feature", "f.txt", b"theirs")
    commit(store, "feature")
    put(store, "main", "f.txt", b"ours")
    head = commit(store, "main")

    with pytest.raises(Conflict, match="f.txt"):
        merge(store, "feature")
    assert store.get_branch("repo", "main").commit_id == head  # nothing moved

    merge(store, "feature", strategy="dest-wins")
    assert read(store, "main", "f.txt") == b"ours"
    put(store, "feature", "f.txt", b"theirs again")
    commit(store, "feature")
    merge(store, "feature", strategy="source-wins")
    assert read(store, "main", "f.txt") == b"theirs again"


def test_nothing_to_merge_and_a_dirty_destination_are_refused(store: Store) -> None:
    store.create_branch("repo", "feature", "main", hidden=False, force=False)
    with pytest.raises(BadRequest, match="no changes"):
        merge(store, "feature")
    put(store, "feature", "a.txt", b"a")
    commit(store, "feature")
    put(store, "main", "dirty.txt", b"uncommitted")
    with pytest.raises(BadRequest, match="uncommitted"):
        merge(store, "feature")


def test_the_merge_base_is_the_newest_common_ancestor(store: Store) -> None:
    put(store, "main", "a.txt", b"1")
    commit(store, "main")
    store.create_branch("repo", "feature", "main", hidden=False, force=False)
    put(store, "feature", "b.txt", b"2")
    commit(store, "feature")
    first_merge = merge(store, "feature")
    put(store, "feature", "c.txt", b"3")
    source = commit(store, "feature")

    _, _, base = store.merge_base("repo", "feature", "main")

    # After the first merge, the feature's commit that was merged is the common ancestor.
    assert base == store.get_commit("repo", first_merge).parents[1]
    assert base != source


@pytest.mark.parametrize(
    ("base", "source", "destination", "merged", "conflicts"),
    [
        # A side that did not change yields to the side that did.
        ({"p": "b"}, {"p": "s"}, {"p": "b"}, {"p": "s"}, []),
        ({"p": "b"}, {"p": "b"}, {"p": "d"}, {"p": "d"}, []),
        # Deleted on one side, untouched on the other: deleted.
        ({"p": "b"}, {}, {"p": "b"}, {}, []),
        # The same change on both sides is no conflict.
        ({"p": "b"}, {"p": "x"}, {"p": "x"}, {"p": "x"}, []),
        # Added on both sides with different content, changed vs deleted: conflicts.
        ({}, {"p": "s"}, {"p": "d"}, {}, ["p"]),
        ({"p": "b"}, {"p": "s"}, {}, {}, ["p"]),
    ],
)
def test_three_way_merge_per_path(
    base: dict[str, str],
    source: dict[str, str],
    destination: dict[str, str],
    merged: dict[str, str],
    conflicts: list[str],
) -> None:
    def entries(tree: dict[str, str]) -> list[Entry]:
        return [entry(path, content) for path, content in tree.items()]

    result, found = _three_way(entries(base), entries(source), entries(destination), "")

    assert {e.path: e.checksum for e in result} == {e.path: e.checksum for e in entries(merged)}
    assert found == conflicts
