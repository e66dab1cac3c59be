"""The same scenarios through the `lakefs` high-level package: a second, independent client.

The package (treeverse's own Python wrapper, Apache-2.0) was written against real lakeFS; if it
works unchanged against the embedded server, so do the clients our users bring.
"""

from __future__ import annotations

import uuid

import lakefs
import pytest
from lakefs.client import Client
from lakefs.exceptions import ConflictException, NotFoundException, ObjectExistsException

from tests.integration.conftest import LakeFSServer


@pytest.fixture
def client(lakefs_server: LakeFSServer) -> Client:
    return Client(
        host=lakefs_server.endpoint,
        username=lakefs_server.access_key_id,
        password=lakefs_server.secret_access_key,
    )


@pytest.fixture
def repository(client: Client) -> lakefs.Repository:
    name = f"pkg-{uuid.uuid4().hex[:10]}"
    return lakefs.Repository(name, client=client).create(storage_namespace=f"local://{name}")


def test_objects_round_trip_with_seek_and_metadata(repository: lakefs.Repository) -> None:
    main = repository.branch("main")

    main.object("data/a.bin").upload(b"0123456789", metadata={"owner": "risk"})
    reader = main.object("data/a.bin").reader()
    reader.seek(4)
    partial = reader.read(3)
    stat = main.object("data/a.bin").stat()

    assert main.object("data/a.bin").reader().read() == b"0123456789"
    assert partial == b"456"
    assert stat.size_bytes == 10 and stat.metadata == {"owner": "risk"}
    assert main.object("data/a.bin").exists() and not main.object("data/zz.bin").exists()


def test_exclusive_upload_refuses_an_existing_object(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    main.object("once.txt").upload("first", mode="x")

    with pytest.raises(ObjectExistsException):
        main.object("once.txt").upload("second", mode="x")
    assert main.object("once.txt").reader(mode="r").read() == "first"


def test_commit_log_and_reading_an_older_commit(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    main.object("v.txt").upload("one")
    first = main.commit("one", metadata={"k": "1"}).get_commit()
    main.object("v.txt").upload("two")
    main.commit("two")

    messages = [commit.message for commit in main.log()]
    older = repository.ref(first.id).object("v.txt").reader(mode="r").read()

    assert messages == ["two", "one", "Repository created"]
    assert first.metadata == {"k": "1"} and len(first.id) == 64
    assert older == "one"
    assert main.object("v.txt").reader(mode="r").read() == "two"


def test_branches_diff_and_merge(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    feature = repository.branch("feature").create(source_reference="main")
    feature.object("new.txt").upload("new")
    feature.commit("add new")

    changes = [(change.type, change.path) for change in main.diff(feature)]
    merge_id = feature.merge_into(main)
    merge_commit = repository.commit(merge_id).get_commit()

    assert changes == [("added", "new.txt")]
    assert len(merge_commit.parents) == 2
    assert main.object("new.txt").reader(mode="r").read() == "new"
    assert sorted(b.id for b in repository.branches()) == ["feature", "main"]
    feature.delete()
    with pytest.raises(NotFoundException):
        repository.branch("feature").get_commit()


def test_conflicting_merge_raises(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    main.object("s.txt").upload("base")
    main.commit("base")
    left = repository.branch("left").create("main")
    right = repository.branch("right").create("main")
    left.object("s.txt").upload("left")
    left.commit("left")
    right.object("s.txt").upload("right")
    right.commit("right")
    left.merge_into(main)

    with pytest.raises(ConflictException):
        right.merge_into(main)
    assert main.object("s.txt").reader(mode="r").read() == "left"


def test_transaction_commits_and_merges_atomically(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    main.object("old.txt").upload("old")
    main.commit("seed")

    with main.transact(commit_message="tx change") as tx:
        tx.object("new.txt").upload("new")
        tx.object("old.txt").delete()

    paths = sorted(obj.path for obj in main.objects())
    assert paths == ["new.txt"]
    assert [b.id for b in repository.branches()] == ["main"]  # the tx branch is gone
    assert "tx change" in [commit.message for commit in main.log(max_amount=3)]


def test_failed_transaction_leaves_the_branch_unchanged(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    head = main.get_commit().id

    with pytest.raises(RuntimeError, match="abort"):
        with main.transact(commit_message="never") as tx:
            tx.object("half.txt").upload("half")
            raise RuntimeError("abort")

    assert main.get_commit().id == head
    assert not main.object("half.txt").exists()


def test_tags_and_listing_with_delimiter(repository: lakefs.Repository) -> None:
    main = repository.branch("main")
    for path in ("a/1", "a/2", "b/3", "top"):
        main.object(path).upload(path)
    main.commit("files")

    tag = repository.tag("v1").create(main)
    listed = [(type(item).__name__, item.path) for item in main.objects(delimiter="/")]

    assert tag.get_commit().id == main.get_commit().id
    assert [t.id for t in repository.tags()] == ["v1"]
    assert listed == [("CommonPrefix", "a/"), ("CommonPrefix", "b/"), ("ObjectInfo", "top")]
    assert repository.ref("v1").object("a/1").reader(mode="r").read() == "a/1"
