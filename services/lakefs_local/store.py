"""Storage engine of the lakeFS-compatible server: content-addressed blobs plus SQLite.

Why this engine: object bytes are immutable files named by their SHA-256, written to a temporary
name and renamed into place, so a crash leaves at worst an unreferenced file. Everything that
changes (repositories, branch heads, staged entries, commits, trees, tags) lives in one SQLite
database in WAL mode; every mutation is one ``BEGIN IMMEDIATE`` transaction, so concurrent
requests serialise on the write lock and a ``kill -9`` at any point leaves either the old or the
new state, never a mix. SQLite's own crash safety is the proven part we lean on.

Model, as in lakeFS: a commit points to a tree (``meta_range_id``: the SHA-256 of its sorted
entries, stored once and shared by every commit that has it); a branch is a commit plus a staging
area of uncommitted writes and tombstones; tags name commits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
BRANCH_NAME = re.compile(r"^\w[-\w]*$")
MAX_BRANCH_NAME = 256


def check_branch_name(name: str) -> str:
    """``name`` if it can name a branch; BadRequest quoting at most its start otherwise."""
    if len(name) > MAX_BRANCH_NAME:
        raise BadRequest(
            f"branch name {name[:40]!r}... is {len(name)} characters; at most {MAX_BRANCH_NAME}"
        )
    if not BRANCH_NAME.match(name):
        raise BadRequest(f"branch name {name!r} must match {BRANCH_NAME.pattern}")
    return name


TAG_NAME = re.compile(r"^[^\s~^:?*\[\\/]+$")
COMMIT_ID = re.compile(r"^[0-9a-f]{64}$")
REF_MODIFIER = re.compile(r"([~^])(\d*)")
EMPTY_TREE = hashlib.sha256(b"").hexdigest()


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status lakeFS answers with."""

    status = 500


class BadRequest(StoreError):
    status = 400


class Unauthorized(StoreError):
    status = 401


class Forbidden(StoreError):
    status = 403


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class TooLarge(StoreError):
    status = 413


class PreconditionFailed(StoreError):
    status = 412


@dataclass(frozen=True)
class Entry:
    """One object in a tree or in a branch's staging area."""

    path: str
    checksum: str
    size: int
    mtime: int
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)

    def same_content(self, other: Entry | None) -> bool:
        return other is not None and (self.checksum, self.metadata) == (
            other.checksum,
            other.metadata,
        )


@dataclass(frozen=True)
class Commit:
    id: str
    parents: list[str]
    committer: str
    message: str
    creation_date: int
    meta_range_id: str
    metadata: dict[str, str]
    generation: int


@dataclass(frozen=True)
class Repository:
    id: str
    creation_date: int
    default_branch: str
    storage_namespace: str
    read_only: bool


@dataclass(frozen=True)
class Ref:
    id: str
    commit_id: str


@dataclass(frozen=True)
class Change:
    """One line of a diff: ``kind`` is added, removed, changed, or prefix_changed."""

    kind: str
    path: str
    is_prefix: bool = False
    size: int | None = None


@dataclass(frozen=True)
class Resolved:
    """A ref resolved to a commit; ``branch`` is set when it named a branch (staging visible)."""

    commit_id: str
    branch: str | None


SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    access_key_id TEXT PRIMARY KEY, secret_access_key TEXT NOT NULL, user_id TEXT NOT NULL,
    creation_date INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS repositories (
    id TEXT PRIMARY KEY, creation_date INTEGER NOT NULL, default_branch TEXT NOT NULL,
    storage_namespace TEXT NOT NULL, read_only INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS commits (
    repo TEXT NOT NULL, id TEXT NOT NULL, parents TEXT NOT NULL, committer TEXT NOT NULL,
    message TEXT NOT NULL, creation_date INTEGER NOT NULL, meta_range_id TEXT NOT NULL,
    metadata TEXT NOT NULL, generation INTEGER NOT NULL, PRIMARY KEY (repo, id));
CREATE TABLE IF NOT EXISTS trees (tree_id TEXT PRIMARY KEY, entries INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tree_entries (
    tree_id TEXT NOT NULL, path TEXT NOT NULL, checksum TEXT NOT NULL, size INTEGER NOT NULL,
    mtime INTEGER NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (tree_id, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS branches (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL,
    hidden INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS staging (
    repo TEXT NOT NULL, branch TEXT NOT NULL, path TEXT NOT NULL, checksum TEXT,
    size INTEGER, mtime INTEGER, content_type TEXT, metadata TEXT,
    PRIMARY KEY (repo, branch, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL, id TEXT NOT NULL, commit_id TEXT NOT NULL, PRIMARY KEY (repo, id));
CREATE TABLE IF NOT EXISTS repository_metadata (
    repo TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (repo, key));
"""


def now() -> int:
    return int(time.time())


def crash_here(point: str, configured: str) -> None:
    """Die as ``kill -9`` would, when the tests asked for a crash at ``point``."""
    if configured == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _entry_from_row(row: sqlite3.Row) -> Entry:
    return Entry(
        path=row["path"],
        checksum=row["checksum"],
        size=row["size"],
        mtime=row["mtime"],
        content_type=row["content_type"],
        metadata=json.loads(row["metadata"]),
    )


def _commit_from_row(row: sqlite3.Row) -> Commit:
    return Commit(
        id=row["id"],
        parents=json.loads(row["parents"]),
        committer=row["committer"],
        message=row["message"],
        creation_date=row["creation_date"],
        meta_range_id=row["meta_range_id"],
        metadata=json.loads(row["metadata"]),
        generation=row["generation"],
    )


def tree_id_of(entries: Iterable[Entry]) -> str:
    """Content address of a tree: SHA-256 over its sorted (path, checksum, metadata)."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda item: item.path):
        line = json.dumps([entry.path, entry.checksum, entry.metadata], sort_keys=True)
        digest.update(line.encode() + b"\n")
    return digest.hexdigest() if digest.digest() != hashlib.sha256().digest() else EMPTY_TREE


def page(items: list[Any], amount: int) -> tuple[list[Any], bool]:
    """The first ``amount`` items and whether more follow."""
    return items[:amount], len(items) > amount


PBKDF2_ITERATIONS = 200_000


def hash_secret(secret: str) -> str:
    """``secret`` as lakeFS-compatible storage keeps it: salted PBKDF2-HMAC-SHA256, never the
    secret itself (this server only checks secrets; it never signs with them)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${salt.hex()}${digest.hex()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith("pbkdf2_sha256$")


def secret_matches(stored: str, given: str) -> bool:
    """Whether ``given`` is the secret ``stored`` keeps (a hash; plain text from before)."""
    if not is_hashed(stored):
        return secrets.compare_digest(stored.encode(), given.encode())
    _, iterations, salt, digest = stored.split("$")
    computed = hashlib.pbkdf2_hmac("sha256", given.encode(), bytes.fromhex(salt), int(iterations))
    return secrets.compare_digest(computed.hex(), digest)


class Store:
    """The repository state of one lakeFS-compatible server, rooted at ``root``."""

    def __init__(self, root: Path, *, crash_at: str = "") -> None:
        self.root = root
        self.blob_root = root / "blobs"
        self.upload_root = root / "uploads"
        # Only the server's own user may read its state: the database holds the credentials.
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        root.chmod(0o700)
        self.blob_root.mkdir(parents=True, exist_ok=True)
        self.upload_root.mkdir(parents=True, exist_ok=True)
        self.database_path = root / "lakefs.sqlite"
        # SQLite gives its -wal and -shm files the database file's mode: create it 0600 first.
        os.close(os.open(self.database_path, os.O_CREAT | os.O_WRONLY, 0o600))
        for path in root.glob("lakefs.sqlite*"):
            path.chmod(0o600)
        self._verified: set[tuple[str, str]] = set()  # (key, sha256 of secret) checked once
        self._local = threading.local()
        # Fault injection for the crash-consistency tests only (`driftloop lakefs serve
        # --crash-at`, a hidden option): the server SIGKILLs itself at this point ("upload",
        # "commit" or "merge").
        self.crash_at = crash_at
        self._connection().executescript(SCHEMA)
        self._hash_plain_secrets()

    def _hash_plain_secrets(self) -> None:
        """Replace secrets stored in plain text by an earlier version with their hash."""
        with self._write() as db:
            plain = db.execute(
                "SELECT access_key_id, secret_access_key FROM credentials "
                "WHERE secret_access_key NOT LIKE 'pbkdf2_sha256$%'"
            ).fetchall()
            for key, secret in plain:
                db.execute(
                    "UPDATE credentials SET secret_access_key = ? WHERE access_key_id = ?",
                    (hash_secret(secret), key),
                )
        if plain:
            self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- connections and transactions ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.database_path, timeout=60, isolation_level=None, check_same_thread=True
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            # Overwritten rows (a secret before it was hashed) leave no trace in free pages.
            connection.execute("PRAGMA secure_delete=ON")
            self._local.connection = connection
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; concurrent writers wait for the lock, readers never block."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for a multi-query read."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # -- credentials --------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM credentials LIMIT 1").fetchone() is not None

    def setup(
        self, username: str, access_key_id: str | None, secret_access_key: str | None
    ) -> tuple[str, str, int]:
        """Create the first user's credentials; 409 when the server is already set up."""
        key = access_key_id or "AKIAJ" + secrets.token_hex(8).upper()[:15]
        secret = secret_access_key or secrets.token_urlsafe(30)
        created = now()
        with self._write() as db:
            if db.execute("SELECT 1 FROM credentials LIMIT 1").fetchone() is not None:
                raise Conflict("lakeFS already initialized")
            db.execute(
                "INSERT INTO credentials VALUES (?, ?, ?, ?)",
                (key, hash_secret(secret), username, created),
            )
        return key, secret, created

    def ensure_credentials(self, username: str, access_key_id: str, secret_access_key: str) -> None:
        """Install credentials given at start (like lakeFS's installation.access_key_id)."""
        with self._write() as db:
            row = db.execute(
                "SELECT secret_access_key FROM credentials WHERE access_key_id = ?",
                (access_key_id,),
            ).fetchone()
            if row is not None and secret_matches(row[0], secret_access_key):
                if is_hashed(row[0]):
                    return
            db.execute(
                "INSERT INTO credentials VALUES (?, ?, ?, ?) ON CONFLICT(access_key_id) "
                "DO UPDATE SET secret_access_key = excluded.secret_access_key",
                (access_key_id, hash_secret(secret_access_key), username, now()),
            )

    def authenticate(self, access_key_id: str, secret_access_key: str) -> tuple[str, int] | None:
        """The user id and creation date behind a key pair, or None."""
        with self._read() as db:
            row = db.execute(
                "SELECT secret_access_key, user_id, creation_date FROM credentials "
                "WHERE access_key_id = ?",
                (access_key_id,),
            ).fetchone()
        if row is None:
            return None
        # A PBKDF2 check costs tens of milliseconds: each key and secret pair is checked once,
        # then remembered by the secret's SHA-256 (in memory only).
        seen = (access_key_id, hashlib.sha256(secret_access_key.encode()).hexdigest())
        if seen not in self._verified:
            if not secret_matches(row[0], secret_access_key):
                return None
            self._verified.add(seen)
        return row[1], row[2]

    # -- repositories -------------------------------------------------------------------------

    def create_repository(
        self,
        name: str,
        storage_namespace: str,
        default_branch: str,
        read_only: bool,
        committer: str,
    ) -> Repository:
        if not REPOSITORY_NAME.match(name):
            raise BadRequest(f"repository name {name!r} must match {REPOSITORY_NAME.pattern}")
        check_branch_name(default_branch)
        if not storage_namespace:
            raise BadRequest("storage_namespace is required")
        created = now()
        with self._write() as db:
            if db.execute("SELECT 1 FROM repositories WHERE id = ?", (name,)).fetchone():
                raise Conflict(f"repository {name!r} already exists")
            db.execute(
                "INSERT INTO repositories VALUES (?, ?, ?, ?, ?)",
                (name, created, default_branch, storage_namespace, int(read_only)),
            )
            self._ensure_tree(db, EMPTY_TREE, [])
            first = self._insert_commit(
                db, name, [], committer, "Repository created", EMPTY_TREE, {}, created
            )
            db.execute("INSERT INTO branches VALUES (?, ?, ?, 0)", (name, default_branch, first.id))
        return Repository(name, created, default_branch, storage_namespace, read_only)

    def get_repository(self, name: str) -> Repository:
        with self._read() as db:
            return self._repository(db, name)

    def list_repositories(
        self, prefix: str, after: str, amount: int, search: str = ""
    ) -> tuple[list[Repository], bool]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM repositories WHERE id > ? AND id LIKE ? ESCAPE '\\' "
                "AND instr(id, ?) > 0 ORDER BY id LIMIT ?",
                (after, _like_prefix(prefix), search, amount + 1),
            ).fetchall()
        return page([self._repository_from_row(row) for row in rows], amount)

    def delete_repository(self, name: str) -> None:
        with self._write() as db:
            self._repository(db, name)
            for table in ("branches", "staging", "tags", "commits", "repository_metadata"):
                db.execute(f"DELETE FROM {table} WHERE repo = ?", (name,))  # noqa: S608
            db.execute("DELETE FROM repositories WHERE id = ?", (name,))

    def repository_metadata(self, name: str) -> dict[str, str]:
        with self._read() as db:
            self._repository(db, name)
            rows = db.execute(
                "SELECT key, value FROM repository_metadata WHERE repo = ?", (name,)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def set_repository_metadata(self, name: str, metadata: dict[str, str]) -> None:
        with self._write() as db:
            self._repository(db, name)
            db.executemany(
                "INSERT OR REPLACE INTO repository_metadata VALUES (?, ?, ?)",
                [(name, key, value) for key, value in metadata.items()],
            )

    def delete_repository_metadata(self, name: str, keys: list[str]) -> None:
        with self._write() as db:
            self._repository(db, name)
            db.executemany(
                "DELETE FROM repository_metadata WHERE repo = ? AND key = ?",
                [(name, key) for key in keys],
            )

    def _repository(self, db: sqlite3.Connection, name: str) -> Repository:
        row = db.execute("SELECT * FROM repositories WHERE id = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"repository not found: {name}")
        return self._repository_from_row(row)

    @staticmethod
    def _repository_from_row(row: sqlite3.Row) -> Repository:
        return Repository(
            row["id"],
            row["creation_date"],
            row["default_branch"],
            row["storage_namespace"],
            bool(row["read_only"]),
        )

    # -- branches -----------------------------------------------------------------------------

    def create_branch(self, repo: str, name: str, source: str, hidden: bool, force: bool) -> str:
        """Create branch ``name`` at ``source``'s commit; returns that commit id."""
        check_branch_name(name)
        with self._write() as db:
            repository = self._repository(db, repo)
            commit_id = self._resolve(db, repo, source).commit_id
            existing = self._branch_head(db, repo, name)
            if existing is not None and not force:
                raise Conflict(f"branch {name!r} already exists")
            if existing is not None and name == repository.default_branch:
                raise Forbidden("cannot overwrite the default branch")
            if db.execute("SELECT 1 FROM tags WHERE repo = ? AND id = ?", (repo, name)).fetchone():
                raise Conflict(f"a tag named {name!r} exists")
            db.execute("DELETE FROM staging WHERE repo = ? AND branch = ?", (repo, name))
            db.execute(
                "INSERT OR REPLACE INTO branches VALUES (?, ?, ?, ?)",
                (repo, name, commit_id, int(hidden)),
            )
        return commit_id

    def get_branch(self, repo: str, name: str) -> Ref:
        with self._read() as db:
            self._repository(db, repo)
            head = self._branch_head(db, repo, name)
        if head is None:
            raise NotFound(f"branch not found: {name}")
        return Ref(name, head)

    def list_branches(
        self, repo: str, prefix: str, after: str, amount: int, show_hidden: bool
    ) -> tuple[list[Ref], bool]:
        with self._read() as db:
            self._repository(db, repo)
            rows = db.execute(
                "SELECT name, commit_id FROM branches WHERE repo = ? AND name > ? "
                "AND name LIKE ? ESCAPE '\\' AND (hidden = 0 OR ?) ORDER BY name LIMIT ?",
                (repo, after, _like_prefix(prefix), int(show_hidden), amount + 1),
            ).fetchall()
        return page([Ref(row[0], row[1]) for row in rows], amount)

    def delete_branch(self, repo: str, name: str) -> None:
        with self._write() as db:
            repository = self._repository(db, repo)
            if name == repository.default_branch:
                raise Forbidden(f"cannot delete the default branch {name!r}")
            if self._branch_head(db, repo, name) is None:
                raise NotFound(f"branch not found: {name}")
            db.execute("DELETE FROM staging WHERE repo = ? AND branch = ?", (repo, name))
            db.execute("DELETE FROM branches WHERE repo = ? AND name = ?", (repo, name))

    def reset_branch(self, repo: str, name: str, path: str | None, prefix: bool) -> None:
        """Drop uncommitted changes of a branch: all, one path, or one prefix."""
        with self._write() as db:
            self._repository(db, repo)
            if self._branch_head(db, repo, name) is None:
                raise NotFound(f"branch not found: {name}")
            if path is None:
                db.execute("DELETE FROM staging WHERE repo = ? AND branch = ?", (repo, name))
            elif prefix:
                db.execute(
                    "DELETE FROM staging WHERE repo = ? AND branch = ? AND path LIKE ? ESCAPE '\\'",
                    (repo, name, _like_prefix(path)),
                )
            else:
                db.execute(
                    "DELETE FROM staging WHERE repo = ? AND branch = ? AND path = ?",
                    (repo, name, path),
                )

    def _branch_head(self, db: sqlite3.Connection, repo: str, name: str) -> str | None:
        row = db.execute(
            "SELECT commit_id FROM branches WHERE repo = ? AND name = ?", (repo, name)
        ).fetchone()
        return None if row is None else str(row[0])

    # -- refs ---------------------------------------------------------------------------------

    def _resolve(self, db: sqlite3.Connection, repo: str, ref: str) -> Resolved:
        """Resolve a branch, tag or commit id (full or unique prefix), then ``~N`` and ``^N``."""
        match = re.search(r"[~^]", ref)
        base, modifiers = (ref[: match.start()], ref[match.start() :]) if match else (ref, "")
        if not base:
            raise BadRequest(f"invalid ref {ref!r}")
        resolved = self._resolve_base(db, repo, base)
        if resolved is None:
            raise NotFound(f"ref not found: {ref}")
        if not modifiers:
            return resolved
        commit_id = resolved.commit_id
        position = 0
        for modifier in REF_MODIFIER.finditer(modifiers):
            if modifier.start() != position:
                raise BadRequest(f"invalid ref {ref!r}")
            position = modifier.end()
            count = int(modifier.group(2) or 1)
            if modifier.group(1) == "~":
                for _ in range(count):
                    parents = self._commit(db, repo, commit_id).parents
                    if not parents:
                        raise NotFound(f"ref not found: {ref}")
                    commit_id = parents[0]
            elif count > 0:
                parents = self._commit(db, repo, commit_id).parents
                if len(parents) < count:
                    raise NotFound(f"ref not found: {ref}")
                commit_id = parents[count - 1]
        if position != len(modifiers):
            raise BadRequest(f"invalid ref {ref!r}")
        return Resolved(commit_id, None)

    def _resolve_base(self, db: sqlite3.Connection, repo: str, base: str) -> Resolved | None:
        head = self._branch_head(db, repo, base)
        if head is not None:
            return Resolved(head, base)
        tag = db.execute(
            "SELECT commit_id FROM tags WHERE repo = ? AND id = ?", (repo, base)
        ).fetchone()
        if tag is not None:
            return Resolved(tag[0], None)
        if re.fullmatch(r"[0-9a-f]{6,64}", base):
            rows = db.execute(
                "SELECT id FROM commits WHERE repo = ? AND id >= ? AND id < ? LIMIT 2",
                (repo, base, base + "g"),
            ).fetchall()
            if len(rows) == 1:
                return Resolved(rows[0][0], None)
        return None

    # -- objects ------------------------------------------------------------------------------

    def blob_path(self, checksum: str) -> Path:
        return self.blob_root / checksum[:2] / checksum[2:]

    def physical_address(self, repository: Repository, checksum: str) -> str:
        return f"{repository.storage_namespace.rstrip('/')}/data/{checksum}"

    def adopt_blob(self, upload: Path, checksum: str) -> None:
        """Move a fully written upload into the content-addressed blob store."""
        target = self.blob_path(checksum)
        if target.exists():
            upload.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        upload.replace(target)

    def put_object(
        self,
        repo: str,
        branch: str,
        entry: Entry,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None:
        """Stage ``entry`` on ``branch``; its blob must already be adopted."""
        with self._write() as db:
            repository = self._repository(db, repo)
            if repository.read_only:
                raise Forbidden(f"repository {repo!r} is read-only")
            head = self._branch_head(db, repo, branch)
            if head is None:
                raise NotFound(f"branch not found: {branch}")
            if if_none_match or if_match is not None:
                current = self._branch_entry(db, repo, branch, head, entry.path)
                if if_none_match and current is not None:
                    raise PreconditionFailed("object exists")
                if if_match is not None and (
                    current is None or current.checksum != if_match.strip('"')
                ):
                    raise PreconditionFailed("object does not match If-Match")
            db.execute(
                "INSERT OR REPLACE INTO staging VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    repo,
                    branch,
                    entry.path,
                    entry.checksum,
                    entry.size,
                    entry.mtime,
                    entry.content_type,
                    json.dumps(entry.metadata, sort_keys=True),
                ),
            )

    def delete_objects(self, repo: str, branch: str, paths: list[str]) -> list[str]:
        """Stage tombstones; returns the paths that were not found."""
        missing = []
        with self._write() as db:
            repository = self._repository(db, repo)
            if repository.read_only:
                raise Forbidden(f"repository {repo!r} is read-only")
            head = self._branch_head(db, repo, branch)
            if head is None:
                raise NotFound(f"branch not found: {branch}")
            for path in paths:
                if self._branch_entry(db, repo, branch, head, path) is None:
                    missing.append(path)
                    continue
                in_tree = self._tree_entry(db, self._commit(db, repo, head).meta_range_id, path)
                if in_tree is None:
                    db.execute(
                        "DELETE FROM staging WHERE repo = ? AND branch = ? AND path = ?",
                        (repo, branch, path),
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO staging (repo, branch, path) VALUES (?, ?, ?)",
                        (repo, branch, path),
                    )
        return missing

    def stat_object(self, repo: str, ref: str, path: str) -> tuple[Repository, Entry]:
        with self._read() as db:
            repository = self._repository(db, repo)
            resolved = self._resolve(db, repo, ref)
            if resolved.branch is not None:
                entry = self._branch_entry(db, repo, resolved.branch, resolved.commit_id, path)
            else:
                entry = self._tree_entry(
                    db, self._commit(db, repo, resolved.commit_id).meta_range_id, path
                )
        if entry is None:
            raise NotFound(f"object not found: {path}")
        return repository, entry

    def list_objects(
        self, repo: str, ref: str, prefix: str, after: str, amount: int, delimiter: str
    ) -> tuple[Repository, list[Entry | str], bool]:
        """Objects (``Entry``) and common prefixes (``str``) in path order, paginated."""
        with self._read() as db:
            repository = self._repository(db, repo)
            resolved = self._resolve(db, repo, ref)
            entries = self._entries(db, repo, resolved, prefix)
        items: list[Entry | str] = []
        last_prefix = None
        for entry in entries:
            rest = entry.path[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if common == last_prefix or common <= after:
                    continue
                last_prefix = common
                items.append(common)
            elif entry.path > after:
                items.append(entry)
            if len(items) > amount:
                break
        return (repository, *page(items, amount))

    def _entries(
        self, db: sqlite3.Connection, repo: str, resolved: Resolved, prefix: str = ""
    ) -> list[Entry]:
        """Every object visible at ``resolved`` under ``prefix``, sorted by path."""
        tree = self._commit(db, repo, resolved.commit_id).meta_range_id
        entries = {entry.path: entry for entry in self._tree_entries(db, tree, prefix)}
        if resolved.branch is not None:
            for row in db.execute(
                "SELECT * FROM staging WHERE repo = ? AND branch = ? AND path LIKE ? ESCAPE '\\'",
                (repo, resolved.branch, _like_prefix(prefix)),
            ):
                if row["checksum"] is None:
                    entries.pop(row["path"], None)
                else:
                    entries[row["path"]] = _entry_from_row(row)
        return [entries[path] for path in sorted(entries)]

    def _tree_entries(self, db: sqlite3.Connection, tree: str, prefix: str = "") -> list[Entry]:
        rows = db.execute(
            "SELECT * FROM tree_entries WHERE tree_id = ? AND path LIKE ? ESCAPE '\\' "
            "ORDER BY path",
            (tree, _like_prefix(prefix)),
        ).fetchall()
        return [_entry_from_row(row) for row in rows]

    def _tree_entry(self, db: sqlite3.Connection, tree: str, path: str) -> Entry | None:
        row = db.execute(
            "SELECT * FROM tree_entries WHERE tree_id = ? AND path = ?", (tree, path)
        ).fetchone()
        return None if row is None else _entry_from_row(row)

    def _branch_entry(
        self, db: sqlite3.Connection, repo: str, branch: str, head: str, path: str
    ) -> Entry | None:
        staged = db.execute(
            "SELECT * FROM staging WHERE repo = ? AND branch = ? AND path = ?",
            (repo, branch, path),
        ).fetchone()
        if staged is not None:
            return None if staged["checksum"] is None else _entry_from_row(staged)
        return self._tree_entry(db, self._commit(db, repo, head).meta_range_id, path)

    def _ensure_tree(self, db: sqlite3.Connection, tree: str, entries: list[Entry]) -> None:
        if db.execute("SELECT 1 FROM trees WHERE tree_id = ?", (tree,)).fetchone():
            return
        db.execute("INSERT INTO trees VALUES (?, ?)", (tree, len(entries)))
        db.executemany(
            "INSERT INTO tree_entries VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    tree,
                    entry.path,
                    entry.checksum,
                    entry.size,
                    entry.mtime,
                    entry.content_type,
                    json.dumps(entry.metadata, sort_keys=True),
                )
                for entry in entries
            ],
        )

    # -- commits ------------------------------------------------------------------------------

    def commit(
        self,
        repo: str,
        branch: str,
        message: str,
        metadata: dict[str, str],
        committer: str,
        date: int | None,
        allow_empty: bool,
    ) -> Commit:
        """Turn the branch's staged changes into a commit, atomically."""
        if not message:
            raise BadRequest("commit message is required")
        with self._write() as db:
            repository = self._repository(db, repo)
            if repository.read_only:
                raise Forbidden(f"repository {repo!r} is read-only")
            head = self._branch_head(db, repo, branch)
            if head is None:
                raise NotFound(f"branch not found: {branch}")
            staged = db.execute(
                "SELECT 1 FROM staging WHERE repo = ? AND branch = ? LIMIT 1", (repo, branch)
            ).fetchone()
            entries = self._entries(db, repo, Resolved(head, branch))
            tree = tree_id_of(entries)
            parent_tree = self._commit(db, repo, head).meta_range_id
            if (staged is None or tree == parent_tree) and not allow_empty:
                raise BadRequest("commit: no changes")
            self._ensure_tree(db, tree, entries)
            commit = self._insert_commit(
                db, repo, [head], committer, message, tree, metadata, date or now()
            )
            db.execute("DELETE FROM staging WHERE repo = ? AND branch = ?", (repo, branch))
            crash_here("commit", self.crash_at)
            db.execute(
                "UPDATE branches SET commit_id = ? WHERE repo = ? AND name = ?",
                (commit.id, repo, branch),
            )
        return commit

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        with self._read() as db:
            self._repository(db, repo)
            resolved = self._resolve(db, repo, commit_id)
            return self._commit(db, repo, resolved.commit_id)

    def log(
        self,
        repo: str,
        ref: str,
        after: str,
        amount: int,
        first_parent: bool,
        limit: bool,
        objects: list[str],
        prefixes: list[str],
        stop_at: str | None,
        since: int | None,
    ) -> tuple[list[Commit], bool]:
        """Ancestors of ``ref``, newest first (by generation, then date)."""
        with self._read() as db:
            self._repository(db, repo)
            start = self._resolve(db, repo, ref).commit_id
            stop = self._resolve(db, repo, stop_at).commit_id if stop_at else None
            commits = self._ancestors(db, repo, start, first_parent)
            commits.sort(key=lambda c: (c.generation, c.creation_date, c.id), reverse=True)
            if objects or prefixes:
                commits = [c for c in commits if self._touches(db, repo, c, objects, prefixes)]
        selected: list[Commit] = []
        passed_after = not after
        for commit in commits:
            if since is not None and commit.creation_date < since:
                continue
            if passed_after:
                selected.append(commit)
            elif commit.id == after:
                passed_after = True
            if commit.id == stop:
                break
        if limit:
            return selected[:amount], False
        return page(selected, amount)

    def _touches(
        self,
        db: sqlite3.Connection,
        repo: str,
        commit: Commit,
        objects: list[str],
        prefixes: list[str],
    ) -> bool:
        before = (
            {
                e.path: e
                for e in self._tree_entries(
                    db, self._commit(db, repo, commit.parents[0]).meta_range_id
                )
            }
            if commit.parents
            else {}
        )
        after = {e.path: e for e in self._tree_entries(db, commit.meta_range_id)}
        changed = {
            path
            for path in before.keys() | after.keys()
            if not (before.get(path) and before[path].same_content(after.get(path)))
        }
        return any(path in changed for path in objects) or any(
            path.startswith(prefix) for path in changed for prefix in prefixes
        )

    def _ancestors(
        self, db: sqlite3.Connection, repo: str, start: str, first_parent: bool = False
    ) -> list[Commit]:
        seen: dict[str, Commit] = {}
        frontier = [start]
        while frontier:
            commit_id = frontier.pop()
            if commit_id in seen:
                continue
            commit = self._commit(db, repo, commit_id)
            seen[commit_id] = commit
            frontier.extend(commit.parents[:1] if first_parent else commit.parents)
        return list(seen.values())

    def _commit(self, db: sqlite3.Connection, repo: str, commit_id: str) -> Commit:
        row = db.execute(
            "SELECT * FROM commits WHERE repo = ? AND id = ?", (repo, commit_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"commit not found: {commit_id}")
        return _commit_from_row(row)

    def _insert_commit(
        self,
        db: sqlite3.Connection,
        repo: str,
        parents: list[str],
        committer: str,
        message: str,
        tree: str,
        metadata: dict[str, str],
        creation_date: int,
    ) -> Commit:
        generation = 1 + max(
            (self._commit(db, repo, parent).generation for parent in parents), default=0
        )
        body = json.dumps(
            [
                repo,
                parents,
                committer,
                message,
                tree,
                metadata,
                creation_date,
                secrets.token_hex(8),
            ],
            sort_keys=True,
        )
        commit = Commit(
            id=hashlib.sha256(body.encode()).hexdigest(),
            parents=parents,
            committer=committer,
            message=message,
            creation_date=creation_date,
            meta_range_id=tree,
            metadata=metadata,
            generation=generation,
        )
        db.execute(
            "INSERT INTO commits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                repo,
                commit.id,
                json.dumps(parents),
                committer,
                message,
                creation_date,
                tree,
                json.dumps(metadata, sort_keys=True),
                generation,
            ),
        )
        return commit

    # -- diff and merge -----------------------------------------------------------------------

    def diff_refs(self, repo: str, left: str, right: str, three_dot: bool) -> list[Change]:
        """Changes from ``left`` to ``right`` (from their merge base to ``right`` if three-dot)."""
        with self._read() as db:
            self._repository(db, repo)
            left_commit = self._resolve(db, repo, left).commit_id
            right_commit = self._resolve(db, repo, right).commit_id
            if three_dot:
                base = self._merge_base(db, repo, left_commit, right_commit)
                left_commit = base.id if base is not None else left_commit
            before = self._tree_entries(db, self._commit(db, repo, left_commit).meta_range_id)
            after = self._tree_entries(db, self._commit(db, repo, right_commit).meta_range_id)
        return _changes(before, after)

    def diff_branch(self, repo: str, branch: str) -> list[Change]:
        """Uncommitted changes of ``branch``."""
        with self._read() as db:
            self._repository(db, repo)
            head = self._branch_head(db, repo, branch)
            if head is None:
                raise NotFound(f"branch not found: {branch}")
            before = self._tree_entries(db, self._commit(db, repo, head).meta_range_id)
            after = self._entries(db, repo, Resolved(head, branch))
        return _changes(before, after)

    def merge_base(self, repo: str, source: str, destination: str) -> tuple[str, str, str]:
        with self._read() as db:
            self._repository(db, repo)
            source_id = self._resolve(db, repo, source).commit_id
            destination_id = self._resolve(db, repo, destination).commit_id
            base = self._merge_base(db, repo, source_id, destination_id)
        if base is None:
            raise NotFound("no common ancestor")
        return source_id, destination_id, base.id

    def merge(
        self,
        repo: str,
        source: str,
        destination: str,
        message: str,
        metadata: dict[str, str],
        strategy: str,
        committer: str,
        allow_empty: bool,
        squash: bool,
    ) -> Commit:
        """Three-way merge of ``source``'s commit into branch ``destination``: a merge commit."""
        if strategy not in ("", "source-wins", "dest-wins"):
            raise BadRequest(f"unknown merge strategy {strategy!r}")
        with self._write() as db:
            repository = self._repository(db, repo)
            if repository.read_only:
                raise Forbidden(f"repository {repo!r} is read-only")
            source_id = self._resolve(db, repo, source).commit_id
            destination_id = self._branch_head(db, repo, destination)
            if destination_id is None:
                raise NotFound(f"branch not found: {destination}")
            if db.execute(
                "SELECT 1 FROM staging WHERE repo = ? AND branch = ? LIMIT 1", (repo, destination)
            ).fetchone():
                raise BadRequest(f"destination branch {destination!r} has uncommitted changes")
            base = self._merge_base(db, repo, source_id, destination_id)
            if base is None:
                raise BadRequest("source and destination have no common ancestor")
            if base.id == source_id and not allow_empty:
                raise BadRequest("no changes: source is already merged into destination")
            merged, conflicts = _three_way(
                self._tree_entries(db, base.meta_range_id),
                self._tree_entries(db, self._commit(db, repo, source_id).meta_range_id),
                self._tree_entries(db, self._commit(db, repo, destination_id).meta_range_id),
                strategy,
            )
            if conflicts:
                shown = ", ".join(conflicts[:20]) + (" ..." if len(conflicts) > 20 else "")
                raise Conflict(f"conflict found: {len(conflicts)} paths ({shown})")
            tree = tree_id_of(merged)
            self._ensure_tree(db, tree, merged)
            parents = [destination_id] if squash else [destination_id, source_id]
            commit = self._insert_commit(
                db,
                repo,
                parents,
                committer,
                message or f"Merge '{source}' into '{destination}'",
                tree,
                metadata,
                now(),
            )
            crash_here("merge", self.crash_at)
            db.execute(
                "UPDATE branches SET commit_id = ? WHERE repo = ? AND name = ?",
                (commit.id, repo, destination),
            )
        return commit

    def _merge_base(
        self, db: sqlite3.Connection, repo: str, left: str, right: str
    ) -> Commit | None:
        left_ancestors = {c.id: c for c in self._ancestors(db, repo, left)}
        common = [c for c in self._ancestors(db, repo, right) if c.id in left_ancestors]
        if not common:
            return None
        return max(common, key=lambda c: (c.generation, c.creation_date, c.id))

    # -- tags ---------------------------------------------------------------------------------

    def create_tag(self, repo: str, tag: str, ref: str, force: bool) -> Ref:
        if not TAG_NAME.match(tag) or tag.startswith("-"):
            raise BadRequest(f"invalid tag name {tag!r}")
        with self._write() as db:
            self._repository(db, repo)
            commit_id = self._resolve(db, repo, ref).commit_id
            exists = db.execute(
                "SELECT 1 FROM tags WHERE repo = ? AND id = ?", (repo, tag)
            ).fetchone()
            if exists and not force:
                raise Conflict(f"tag {tag!r} already exists")
            db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (repo, tag, commit_id))
        return Ref(tag, commit_id)

    def get_tag(self, repo: str, tag: str) -> Ref:
        with self._read() as db:
            self._repository(db, repo)
            row = db.execute(
                "SELECT commit_id FROM tags WHERE repo = ? AND id = ?", (repo, tag)
            ).fetchone()
        if row is None:
            raise NotFound(f"tag not found: {tag}")
        return Ref(tag, row[0])

    def list_tags(self, repo: str, prefix: str, after: str, amount: int) -> tuple[list[Ref], bool]:
        with self._read() as db:
            self._repository(db, repo)
            rows = db.execute(
                "SELECT id, commit_id FROM tags WHERE repo = ? AND id > ? AND id LIKE ? "
                "ESCAPE '\\' ORDER BY id LIMIT ?",
                (repo, after, _like_prefix(prefix), amount + 1),
            ).fetchall()
        return page([Ref(row[0], row[1]) for row in rows], amount)

    def delete_tag(self, repo: str, tag: str) -> None:
        with self._write() as db:
            self._repository(db, repo)
            deleted = db.execute("DELETE FROM tags WHERE repo = ? AND id = ?", (repo, tag))
            if deleted.rowcount == 0:
                raise NotFound(f"tag not found: {tag}")


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _changes(before: list[Entry], after: list[Entry]) -> list[Change]:
    old = {entry.path: entry for entry in before}
    new = {entry.path: entry for entry in after}
    changes = []
    for path in sorted(old.keys() | new.keys()):
        if path not in old:
            changes.append(Change("added", path, size=new[path].size))
        elif path not in new:
            changes.append(Change("removed", path, size=old[path].size))
        elif not old[path].same_content(new[path]):
            changes.append(Change("changed", path, size=new[path].size))
    return changes


def _three_way(
    base: list[Entry], source: list[Entry], destination: list[Entry], strategy: str
) -> tuple[list[Entry], list[str]]:
    """Merge per path: a side that did not change yields to the other; both changing conflicts."""
    base_map = {e.path: e for e in base}
    source_map = {e.path: e for e in source}
    destination_map = {e.path: e for e in destination}
    merged: dict[str, Entry] = {}
    conflicts = []
    for path in sorted(base_map.keys() | source_map.keys() | destination_map.keys()):
        ancestor, ours, theirs = base_map.get(path), destination_map.get(path), source_map.get(path)
        source_changed = not _same(ancestor, theirs)
        destination_changed = not _same(ancestor, ours)
        if source_changed and destination_changed and not _same(ours, theirs):
            if strategy == "source-wins":
                chosen = theirs
            elif strategy == "dest-wins":
                chosen = ours
            else:
                conflicts.append(path)
                continue
        else:
            chosen = theirs if source_changed else ours
        if chosen is not None:
            merged[path] = chosen
    return list(merged.values()), conflicts


def _same(left: Entry | None, right: Entry | None) -> bool:
    if left is None or right is None:
        return left is right
    return left.same_content(right)
