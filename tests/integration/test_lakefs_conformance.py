"""Conformance of the lakeFS-compatible server to the real lakeFS API document.

Every exchange goes through SpecCheckedSession, which validates request and response against
the vendored services/lakefs_local/openapi/lakefs-openapi.yml; the assertions here check the
behaviour lakeFS has. The last test checks that the suite exercised every operation the server
routes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from services.lakefs_local.app import LakeFSApp
from services.lakefs_local.openapi import document
from tests.integration.conftest import LakeFSServer, run_lakefs_server
from tests.integration.lakefs_spec import SpecCheckedSession, operation_id

COVERED: set[str] = set()
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def api(lakefs_server: LakeFSServer) -> Iterator[SpecCheckedSession]:
    session = SpecCheckedSession(
        lakefs_server.endpoint, (lakefs_server.access_key_id, lakefs_server.secret_access_key)
    )
    yield session
    COVERED.update(session.covered)


@pytest.fixture
def repo(api: SpecCheckedSession) -> str:
    name = f"conf-{uuid.uuid4().hex[:10]}"
    created = api.post("/repositories", json={"name": name, "storage_namespace": f"local://{name}"})
    assert created.status_code == 201
    return name


def upload(api: SpecCheckedSession, repo: str, branch: str, path: str, data: bytes) -> dict:
    response = api.post(
        f"/repositories/{repo}/branches/{branch}/objects",
        params={"path": path},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def commit(api: SpecCheckedSession, repo: str, branch: str, message: str, **extra: object) -> dict:
    response = api.post(
        f"/repositories/{repo}/branches/{branch}/commits", json={"message": message, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def read(api: SpecCheckedSession, repo: str, ref: str, path: str) -> bytes:
    response = api.get(f"/repositories/{repo}/refs/{ref}/objects", params={"path": path})
    assert response.status_code == 200, response.text
    return response.content


def branch(api: SpecCheckedSession, repo: str, name: str, source: str = "main") -> str:
    response = api.post(f"/repositories/{repo}/branches", json={"name": name, "source": source})
    assert response.status_code == 201, response.text
    return response.text


# -- setup, auth, config ---------------------------------------------------------------------


def test_setup_creates_the_first_credentials_once(tmp_path) -> None:
    server = run_lakefs_server(tmp_path / "blank", credentials=False)
    try:
        anonymous = SpecCheckedSession(server.endpoint, None)
        assert anonymous.get("/healthcheck").status_code == 204
        assert anonymous.get("/setup_lakefs").json()["state"] == "not_initialized"

        created = anonymous.post("/setup_lakefs", json={"username": "admin"})

        assert created.status_code == 200
        keys = created.json()
        assert keys["access_key_id"] and keys["secret_access_key"]
        assert anonymous.get("/setup_lakefs").json()["state"] == "initialized"
        assert anonymous.post("/setup_lakefs", json={"username": "again"}).status_code == 409
        user = SpecCheckedSession(
            server.endpoint, (keys["access_key_id"], keys["secret_access_key"])
        )
        assert user.get("/user").json()["user"]["id"] == "admin"
        COVERED.update(anonymous.covered | user.covered)
    finally:
        server.component.stop()


def test_secrets_are_stored_hashed_in_files_only_the_owner_can_read(
    lakefs_server: LakeFSServer,
) -> None:
    """The access secret was stored in plain text in a world-readable SQLite file (0644; user
    nobody read it)."""
    session = requests.Session()
    session.auth = (lakefs_server.access_key_id, lakefs_server.secret_access_key)
    assert session.get(f"{lakefs_server.api}/user", timeout=10).status_code == 200
    files = [path for path in lakefs_server.home.rglob("lakefs.sqlite*") if path.is_file()]

    assert files
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
        assert lakefs_server.secret_access_key.encode() not in path.read_bytes(), path
    if os.geteuid() == 0:  # as root: read it as user nobody, as the probe did
        read = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "cat",
                str(files[0]),
            ],
            capture_output=True,
            check=False,
        )
        assert read.returncode != 0 and b"Permission denied" in read.stderr


def test_requests_without_valid_credentials_get_401(lakefs_server: LakeFSServer) -> None:
    anonymous = SpecCheckedSession(lakefs_server.endpoint, None)
    wrong = SpecCheckedSession(lakefs_server.endpoint, (lakefs_server.access_key_id, "wrong"))

    assert anonymous.get("/repositories").status_code == 401
    assert wrong.get("/repositories").status_code == 401
    assert wrong.get("/config").status_code == 401
    assert anonymous.get("/healthcheck").status_code == 204


def test_config_says_local_storage_without_presigning(api: SpecCheckedSession) -> None:
    config = api.get("/config").json()

    assert config["storage_config"]["blockstore_type"] == "local"
    assert config["storage_config"]["pre_sign_support"] is False
    assert api.get("/config/storage").json()["pre_sign_support"] is False
    assert api.get("/config/version").json()["version"]
    assert api.get("/user").json()["user"]["id"] == "admin"


# -- repositories ------------------------------------------------------------------------------


def test_repository_lifecycle(api: SpecCheckedSession) -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "storage_namespace": f"local://{name}", "default_branch": "trunk"}

    created = api.post("/repositories", json=body)
    duplicate = api.post("/repositories", json=body)
    invalid = api.post("/repositories", json={"name": "Bad_Name", "storage_namespace": "local://x"})
    fetched = api.get(f"/repositories/{name}")

    assert created.status_code == 201
    assert created.json()["default_branch"] == "trunk"
    assert duplicate.status_code == 409
    assert invalid.status_code == 400
    assert fetched.json()["storage_namespace"] == f"local://{name}"
    head = api.get(f"/repositories/{name}/branches/trunk").json()
    first = api.get(f"/repositories/{name}/commits/{head['commit_id']}").json()
    assert first["message"] == "Repository created" and first["parents"] == []

    assert (
        api.post(f"/repositories/{name}/metadata", json={"metadata": {"team": "risk"}}).status_code
        == 204
    )
    assert api.get(f"/repositories/{name}/metadata").json() == {"team": "risk"}
    assert api.delete(f"/repositories/{name}/metadata", json={"keys": ["team"]}).status_code == 204
    assert api.get(f"/repositories/{name}/metadata").json() == {}

    assert api.delete(f"/repositories/{name}").status_code == 204
    assert api.get(f"/repositories/{name}").status_code == 404


def test_repository_listing_paginates(api: SpecCheckedSession) -> None:
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    for index in range(3):
        api.post(
            "/repositories", json={"name": f"{prefix}-{index}", "storage_namespace": "local://p"}
        )

    first = api.get("/repositories", params={"prefix": prefix, "amount": 2}).json()
    second = api.get(
        "/repositories",
        params={"prefix": prefix, "amount": 2, "after": first["pagination"]["next_offset"]},
    ).json()

    assert [r["id"] for r in first["results"]] == [f"{prefix}-0", f"{prefix}-1"]
    assert first["pagination"]["has_more"] is True
    assert [r["id"] for r in second["results"]] == [f"{prefix}-2"]
    assert second["pagination"]["has_more"] is False


# -- branches ----------------------------------------------------------------------------------


def test_branch_lifecycle(api: SpecCheckedSession, repo: str) -> None:
    main_head = api.get(f"/repositories/{repo}/branches/main").json()["commit_id"]

    created = api.post(
        f"/repositories/{repo}/branches", json={"name": "feature-1", "source": "main"}
    )
    duplicate = api.post(
        f"/repositories/{repo}/branches", json={"name": "feature-1", "source": "main"}
    )
    slash = api.post(f"/repositories/{repo}/branches", json={"name": "a/b", "source": "main"})
    dot = api.post(f"/repositories/{repo}/branches", json={"name": "a.b", "source": "main"})
    missing_source = api.post(
        f"/repositories/{repo}/branches", json={"name": "x", "source": "nope"}
    )

    assert created.status_code == 201 and created.text == main_head
    assert created.headers["Content-Type"].startswith("text/html")
    assert duplicate.status_code == 409
    assert slash.status_code == 400 and dot.status_code == 400
    assert missing_source.status_code == 404
    assert api.get(f"/repositories/{repo}/branches/feature-1").json()["commit_id"] == main_head
    listed = api.get(f"/repositories/{repo}/branches", params={"amount": 1}).json()
    assert listed["pagination"]["has_more"] is True
    assert [b["id"] for b in listed["results"]] == ["feature-1"]
    assert api.delete(f"/repositories/{repo}/branches/main").status_code == 403
    assert api.delete(f"/repositories/{repo}/branches/feature-1").status_code == 204
    assert api.get(f"/repositories/{repo}/branches/feature-1").status_code == 404
    assert api.delete(f"/repositories/{repo}/branches/feature-1").status_code == 404


def test_hidden_branches_are_listed_only_on_request(api: SpecCheckedSession, repo: str) -> None:
    api.post(
        f"/repositories/{repo}/branches", json={"name": "tx-1", "source": "main", "hidden": True}
    )

    default = api.get(f"/repositories/{repo}/branches").json()["results"]
    shown = api.get(f"/repositories/{repo}/branches", params={"show_hidden": "true"}).json()[
        "results"
    ]

    assert [b["id"] for b in default] == ["main"]
    assert sorted(b["id"] for b in shown) == ["main", "tx-1"]


def test_reset_drops_uncommitted_changes(api: SpecCheckedSession, repo: str) -> None:
    upload(api, repo, "main", "keep.txt", b"k")
    commit(api, repo, "main", "keep")
    upload(api, repo, "main", "drop/a.txt", b"a")
    upload(api, repo, "main", "drop/b.txt", b"b")
    upload(api, repo, "main", "other.txt", b"o")

    by_prefix = api.put(
        f"/repositories/{repo}/branches/main", json={"type": "common_prefix", "path": "drop/"}
    )
    changes = api.get(f"/repositories/{repo}/branches/main/diff").json()["results"]
    full = api.put(f"/repositories/{repo}/branches/main", json={"type": "reset"})

    assert by_prefix.status_code == 204
    assert [c["path"] for c in changes] == ["other.txt"]
    assert full.status_code == 204
    assert api.get(f"/repositories/{repo}/branches/main/diff").json()["results"] == []


# -- objects -----------------------------------------------------------------------------------


def test_upload_raw_and_multipart_then_read_back(api: SpecCheckedSession, repo: str) -> None:
    raw = api.post(
        f"/repositories/{repo}/branches/main/objects",
        params={"path": "data/raw.bin"},
        data=b"raw-bytes",
        headers={"Content-Type": "application/octet-stream", "X-Lakefs-Meta-Source": "test"},
    )
    form = api.post(
        f"/repositories/{repo}/branches/main/objects",
        params={"path": "data/form.bin"},
        files={"content": ("form.bin", b"multipart-bytes", "application/octet-stream")},
    )

    assert raw.status_code == 201 and form.status_code == 201
    assert raw.json()["size_bytes"] == 9 and raw.json()["path_type"] == "object"
    assert raw.json()["metadata"] == {"source": "test"}
    assert read(api, repo, "main", "data/raw.bin") == b"raw-bytes"
    assert read(api, repo, "main", "data/form.bin") == b"multipart-bytes"
    got = api.get(f"/repositories/{repo}/refs/main/objects", params={"path": "data/raw.bin"})
    assert got.headers["ETag"] == f'"{raw.json()["checksum"]}"'
    assert got.headers["Content-Length"] == "9"
    assert got.headers["Last-Modified"].endswith("GMT")


def test_if_none_match_refuses_to_overwrite(api: SpecCheckedSession, repo: str) -> None:
    path = {"path": "once.txt"}
    headers = {"Content-Type": "application/octet-stream", "If-None-Match": "*"}

    first = api.post(
        f"/repositories/{repo}/branches/main/objects", params=path, data=b"1", headers=headers
    )
    second = api.post(
        f"/repositories/{repo}/branches/main/objects", params=path, data=b"2", headers=headers
    )
    commit(api, repo, "main", "once")
    after_commit = api.post(
        f"/repositories/{repo}/branches/main/objects", params=path, data=b"3", headers=headers
    )

    assert first.status_code == 201
    assert second.status_code == 412 and after_commit.status_code == 412
    assert read(api, repo, "main", "once.txt") == b"1"


def test_ranges_heads_and_stats(api: SpecCheckedSession, repo: str) -> None:
    stats = upload(api, repo, "main", "digits.txt", b"0123456789")
    objects = f"/repositories/{repo}/refs/main/objects"

    middle = api.get(objects, params={"path": "digits.txt"}, headers={"Range": "bytes=2-5"})
    suffix = api.get(objects, params={"path": "digits.txt"}, headers={"Range": "bytes=-3"})
    open_end = api.get(objects, params={"path": "digits.txt"}, headers={"Range": "bytes=7-"})
    beyond = api.get(objects, params={"path": "digits.txt"}, headers={"Range": "bytes=50-60"})
    head = api.head(objects, params={"path": "digits.txt"})
    head_missing = api.head(objects, params={"path": "nope.txt"})
    stat = api.get(f"{objects}/stat", params={"path": "digits.txt"})
    stat_missing = api.get(f"{objects}/stat", params={"path": "nope.txt"})
    missing = api.get(objects, params={"path": "nope.txt"})

    assert (middle.status_code, middle.content) == (206, b"2345")
    assert middle.headers["Content-Range"] == "bytes 2-5/10"
    assert (suffix.status_code, suffix.content) == (206, b"789")
    assert (open_end.status_code, open_end.content) == (206, b"789")
    assert beyond.status_code == 416
    assert head.status_code == 200 and head.headers["Content-Length"] == "10"
    assert head_missing.status_code == 404
    assert stat.json()["checksum"] == stats["checksum"] and stat.json()["size_bytes"] == 10
    assert stat_missing.status_code == 404 and missing.status_code == 404


def test_listing_with_prefix_delimiter_and_pages(api: SpecCheckedSession, repo: str) -> None:
    for path in ("a/1.txt", "a/2.txt", "a/deep/3.txt", "b/4.txt", "top.txt"):
        upload(api, repo, "main", path, path.encode())
    ls = f"/repositories/{repo}/refs/main/objects/ls"

    rooted = api.get(ls, params={"delimiter": "/"}).json()["results"]
    under_a = api.get(ls, params={"prefix": "a/", "delimiter": "/"}).json()["results"]
    page_one = api.get(ls, params={"amount": 2}).json()
    page_two = api.get(
        ls, params={"amount": 2, "after": page_one["pagination"]["next_offset"]}
    ).json()

    assert [(o["path"], o["path_type"]) for o in rooted] == [
        ("a/", "common_prefix"),
        ("b/", "common_prefix"),
        ("top.txt", "object"),
    ]
    assert [o["path"] for o in under_a] == ["a/1.txt", "a/2.txt", "a/deep/"]
    assert [o["path"] for o in page_one["results"]] == ["a/1.txt", "a/2.txt"]
    assert page_one["pagination"]["has_more"] is True
    assert [o["path"] for o in page_two["results"]] == ["a/deep/3.txt", "b/4.txt"]


def test_deletes_single_and_bulk(api: SpecCheckedSession, repo: str) -> None:
    for path in ("x.txt", "y.txt", "z.txt"):
        upload(api, repo, "main", path, b"-")
    commit(api, repo, "main", "three")
    objects = f"/repositories/{repo}/branches/main/objects"

    single = api.delete(objects, params={"path": "x.txt"})
    missing = api.delete(objects, params={"path": "never.txt"})
    bulk = api.post(f"{objects}/delete", json={"paths": ["y.txt", "never.txt"]})
    changes = api.get(f"/repositories/{repo}/branches/main/diff").json()["results"]

    assert single.status_code == 204 and missing.status_code == 404
    assert bulk.status_code == 200 and bulk.json()["errors"] == []
    assert [(c["type"], c["path"]) for c in changes] == [("removed", "x.txt"), ("removed", "y.txt")]
    assert (
        api.get(f"/repositories/{repo}/refs/main/objects", params={"path": "x.txt"}).status_code
        == 404
    )
    assert read(api, repo, "main~0", "x.txt") == b"-"  # still in the last commit


# -- commits, log, refs ------------------------------------------------------------------------


def test_commit_records_metadata_and_empty_commits_are_refused(
    api: SpecCheckedSession, repo: str
) -> None:
    upload(api, repo, "main", "f.txt", b"v1")

    made = commit(api, repo, "main", "add f", metadata={"driftloop.batch_id": "b1"})
    empty = api.post(f"/repositories/{repo}/branches/main/commits", json={"message": "nothing"})
    allowed = commit(api, repo, "main", "marker", allow_empty=True)
    fetched = api.get(f"/repositories/{repo}/commits/{made['id']}").json()

    assert HEX64.match(made["id"])
    assert made["metadata"] == {"driftloop.batch_id": "b1"}
    assert empty.status_code == 400
    assert allowed["parents"] == [made["id"]]
    assert fetched["message"] == "add f" and fetched["meta_range_id"]
    assert api.get(f"/repositories/{repo}/commits/{'0' * 64}").status_code == 404
    assert api.get(f"/repositories/{repo}/branches/main/diff").json()["results"] == []


def test_reading_at_commit_ids_tags_and_ancestry_modifiers(
    api: SpecCheckedSession, repo: str
) -> None:
    upload(api, repo, "main", "v.txt", b"one")
    first = commit(api, repo, "main", "one")["id"]
    upload(api, repo, "main", "v.txt", b"two")
    commit(api, repo, "main", "two")
    tag = api.post(f"/repositories/{repo}/tags", json={"id": "release-1", "ref": first})

    assert tag.status_code == 201 and tag.json() == {"id": "release-1", "commit_id": first}
    assert read(api, repo, "main", "v.txt") == b"two"
    assert read(api, repo, first, "v.txt") == b"one"
    assert read(api, repo, first[:12], "v.txt") == b"one"
    assert read(api, repo, "release-1", "v.txt") == b"one"
    assert read(api, repo, "main~1", "v.txt") == b"one"
    assert read(api, repo, "main^1", "v.txt") == b"one"
    assert (
        api.get(f"/repositories/{repo}/refs/main~9/objects", params={"path": "v.txt"}).status_code
        == 404
    )


def test_log_lists_ancestors_newest_first_with_pages(api: SpecCheckedSession, repo: str) -> None:
    for index in range(3):
        upload(api, repo, "main", "n.txt", str(index).encode())
        commit(api, repo, "main", f"commit {index}")
    log = f"/repositories/{repo}/refs/main/commits"

    everything = api.get(log).json()["results"]
    first_page = api.get(log, params={"amount": 2}).json()
    rest = api.get(
        log, params={"amount": 2, "after": first_page["pagination"]["next_offset"]}
    ).json()

    assert [c["message"] for c in everything] == [
        "commit 2",
        "commit 1",
        "commit 0",
        "Repository created",
    ]
    assert [c["message"] for c in first_page["results"]] == ["commit 2", "commit 1"]
    assert [c["message"] for c in rest["results"]] == ["commit 0", "Repository created"]


def test_diff_two_dot_and_three_dot(api: SpecCheckedSession, repo: str) -> None:
    upload(api, repo, "main", "base.txt", b"b")
    commit(api, repo, "main", "base")
    branch(api, repo, "work")
    upload(api, repo, "work", "work.txt", b"w")
    commit(api, repo, "work", "work")
    upload(api, repo, "main", "main.txt", b"m")
    commit(api, repo, "main", "main moved on")
    diff = f"/repositories/{repo}/refs/main/diff/work"

    three = api.get(diff).json()["results"]
    two = api.get(diff, params={"type": "two_dot"}).json()["results"]

    assert [(d["type"], d["path"]) for d in three] == [("added", "work.txt")]
    assert sorted((d["type"], d["path"]) for d in two) == [
        ("added", "work.txt"),
        ("removed", "main.txt"),
    ]


# -- merge -------------------------------------------------------------------------------------


def test_merge_makes_a_merge_commit_even_when_fast_forward_is_possible(
    api: SpecCheckedSession, repo: str
) -> None:
    main_head = api.get(f"/repositories/{repo}/branches/main").json()["commit_id"]
    branch(api, repo, "ingest-b1")
    upload(api, repo, "ingest-b1", "batches/b1.parquet", b"rows")
    source_head = commit(api, repo, "ingest-b1", "batch b1")["id"]

    merged = api.post(
        f"/repositories/{repo}/refs/ingest-b1/merge/main",
        json={"message": "publish b1", "metadata": {"driftloop.batch_id": "b1"}},
    )
    merge_commit = api.get(f"/repositories/{repo}/commits/{merged.json()['reference']}").json()
    base = api.get(f"/repositories/{repo}/refs/ingest-b1/merge/main").json()
    again = api.post(f"/repositories/{repo}/refs/ingest-b1/merge/main", json={})

    assert merged.status_code == 200
    assert merge_commit["parents"] == [main_head, source_head]
    assert merge_commit["message"] == "publish b1"
    assert merge_commit["metadata"] == {"driftloop.batch_id": "b1"}
    assert base["base_commit_id"] == source_head
    assert again.status_code == 400
    assert read(api, repo, "main", "batches/b1.parquet") == b"rows"
    assert read(api, repo, "main^2", "batches/b1.parquet") == b"rows"


def test_merge_conflicts_and_strategies(api: SpecCheckedSession, repo: str) -> None:
    upload(api, repo, "main", "shared.txt", b"base")
    commit(api, repo, "main", "base")
    for name, content in (("left", b"left"), ("right", b"right")):
        branch(api, repo, name)
        upload(api, repo, name, "shared.txt", content)
        commit(api, repo, name, f"{name} edit")
    api.post(f"/repositories/{repo}/refs/left/merge/main", json={})

    conflict = api.post(f"/repositories/{repo}/refs/right/merge/main", json={})
    dest_wins = api.post(
        f"/repositories/{repo}/refs/right/merge/main", json={"strategy": "dest-wins"}
    )
    after_dest = read(api, repo, "main", "shared.txt")
    branch(api, repo, "right2", "right")
    upload(api, repo, "right2", "shared.txt", b"right again")
    commit(api, repo, "right2", "edit")
    source_wins = api.post(
        f"/repositories/{repo}/refs/right2/merge/main", json={"strategy": "source-wins"}
    )

    assert conflict.status_code == 409
    assert "shared.txt" in conflict.json()["message"]
    assert dest_wins.status_code == 200 and after_dest == b"left"
    assert source_wins.status_code == 200
    assert read(api, repo, "main", "shared.txt") == b"right again"


def test_merge_into_a_dirty_destination_is_refused(api: SpecCheckedSession, repo: str) -> None:
    branch(api, repo, "feature")
    upload(api, repo, "feature", "f.txt", b"f")
    commit(api, repo, "feature", "f")
    upload(api, repo, "main", "uncommitted.txt", b"u")

    refused = api.post(f"/repositories/{repo}/refs/feature/merge/main", json={})

    assert refused.status_code == 400
    assert (
        api.get(f"/repositories/{repo}/refs/main/objects", params={"path": "f.txt"}).status_code
        == 404
    )


# -- tags --------------------------------------------------------------------------------------


def test_tag_lifecycle(api: SpecCheckedSession, repo: str) -> None:
    head = api.get(f"/repositories/{repo}/branches/main").json()["commit_id"]

    created = api.post(f"/repositories/{repo}/tags", json={"id": "v1", "ref": "main"})
    duplicate = api.post(f"/repositories/{repo}/tags", json={"id": "v1", "ref": "main"})
    api.post(f"/repositories/{repo}/tags", json={"id": "v2", "ref": "main"})
    listed = api.get(f"/repositories/{repo}/tags").json()["results"]

    assert created.status_code == 201 and duplicate.status_code == 409
    assert api.get(f"/repositories/{repo}/tags/v1").json() == {"id": "v1", "commit_id": head}
    assert [t["id"] for t in listed] == ["v1", "v2"]
    assert api.delete(f"/repositories/{repo}/tags/v1").status_code == 204
    assert api.get(f"/repositories/{repo}/tags/v1").status_code == 404
    assert api.delete(f"/repositories/{repo}/tags/v1").status_code == 404


def test_bad_requests_say_what_is_wrong(api: SpecCheckedSession, repo: str) -> None:
    no_path = api.get(f"/repositories/{repo}/refs/main/objects/stat")
    bad_json = api.post(
        f"/repositories/{repo}/branches",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    bad_amount = api.get(f"/repositories/{repo}/branches", params={"amount": 5000})
    no_message = api.post(f"/repositories/{repo}/branches/main/commits", json={"metadata": {}})

    assert no_path.status_code == 400 and "path" in no_path.json()["message"]
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["message"]
    assert bad_amount.status_code == 400 and "amount" in bad_amount.json()["message"]
    assert no_message.status_code == 400 and "message" in no_message.json()["message"]


def test_the_api_document_is_served_without_credentials(lakefs_server: LakeFSServer) -> None:
    # lakeFS serves its document outside /api/v1 without authentication: a client (or a person)
    # can read which API this server speaks.
    for path in ("/openapi.json", "/swagger.json"):
        response = requests.get(f"{lakefs_server.endpoint}{path}", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        served = response.json()
        # JSON keys are strings: the YAML's response codes (200, 404) arrive as "200", "404".
        assert served == json.loads(json.dumps(document()))
        branches = served["paths"]["/repositories/{repository}/branches"]
        assert branches["post"]["responses"]["201"]["description"]


def stored_files(home: Path) -> set[Path]:
    """The files of the server's blob store and its upload area."""
    return {
        path
        for folder in home.rglob("*")
        if folder.is_dir() and folder.name in ("blobs", "uploads")
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_hostile_requests_get_a_clean_4xx_and_leave_nothing_behind(
    lakefs_server: LakeFSServer, repo: str
) -> None:
    """Each of these was found by a probe: a 500 (RecursionError) for deeply nested JSON, a
    300 MB upload to a branch that does not exist kept on disk, a 10,000-character branch name
    accepted, and bodies of any size read whole."""
    session = requests.Session()
    session.auth = (lakefs_server.access_key_id, lakefs_server.secret_access_key)
    base = f"{lakefs_server.endpoint}/api/v1/repositories/{repo}"
    json_headers = {"Content-Type": "application/json"}
    before = stored_files(lakefs_server.home)

    nested = session.post(f"{base}/branches", data=b"[" * 200_000, headers=json_headers)
    huge_json = session.post(
        f"{base}/branches", data=b'{"name": "' + b"a" * (2 << 20) + b'"}', headers=json_headers
    )
    long_name = session.post(f"{base}/branches", json={"name": "b" * 10_000, "source": "main"})
    chunk = b"x" * (1 << 20)
    to_nowhere = session.post(
        f"{base}/branches/no-such-branch/objects",
        params={"path": "big.bin"},
        data=(chunk for _ in range(100)),  # 100 MB, streamed
        headers={"Content-Type": "application/octet-stream"},
    )

    assert nested.status_code == 400 and "nested" in nested.json()["message"], nested.text
    assert huge_json.status_code == 413, huge_json.text
    assert long_name.status_code == 400 and len(long_name.text) < 1000, long_name.text[:200]
    assert to_nowhere.status_code == 404, to_nowhere.text
    assert stored_files(lakefs_server.home) == before


# -- coverage (keep last) -------------------------------------------------------------------


def test_every_operation_the_server_routes_was_validated() -> None:
    routed = set()
    for route in LakeFSApp.__new__(LakeFSApp).routes():
        if not route.path.startswith("/api/v1"):
            continue  # the API document itself, checked above
        for method in route.methods or ():
            if (
                method == "HEAD"
                and "GET" in (route.methods or ())
                and not route.path.endswith("/objects")
            ):
                continue
            routed.add(operation_id(method, route.path.replace("{", "").replace("}", "")))
    missing = routed - COVERED
    if not COVERED:
        pytest.fail("run the whole module: coverage is gathered by the tests above")
    assert not missing, f"operations the server routes that no test validated: {sorted(missing)}"
