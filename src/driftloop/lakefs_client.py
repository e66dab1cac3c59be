"""driftloop's access to lakeFS, over the generated ``lakefs-sdk``.

The same code talks to real lakeFS in production and to the embedded lakeFS-compatible server
locally. Errors come out typed (:class:`NotFoundError`, :class:`ConflictError`,
:class:`MergeConflictError` with the conflicting paths, :class:`PreconditionFailedError`), and
transient failures (connection errors, 502/503/504, and 500 on reads) are retried with backoff.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import lakefs_sdk
import urllib3
from lakefs_sdk.exceptions import ApiException

from driftloop.settings import LakeFSSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
# Status codes that mean the request did not take effect and may be sent again.
_RETRY_ALWAYS = frozenset({502, 503, 504, 429})
PAGE = 1000


class LakeFSError(RuntimeError):
    """A lakeFS request failed; ``status`` is the HTTP status (0: server unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(LakeFSError):
    """The repository, branch, ref or object does not exist."""


class ConflictError(LakeFSError):
    """The resource exists already, or the change conflicts with another."""


class MergeConflictError(ConflictError):
    """A merge found paths changed differently on both sides; ``paths`` names them."""

    def __init__(self, source: str, destination: str, paths: list[str]) -> None:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        super().__init__(
            f"merging {source!r} into {destination!r} conflicts on {len(paths)} path(s): {shown}",
            409,
        )
        self.source = source
        self.destination = destination
        self.paths = paths


class PreconditionFailedError(LakeFSError):
    """A conditional write (If-None-Match: *) found the object already there."""


class NothingToCommitError(LakeFSError):
    """A commit or merge had no changes to record."""


class UnavailableError(LakeFSError):
    """lakeFS could not be reached, or kept failing, after every retry."""


class CredentialsMissingError(LakeFSError):
    """No lakeFS credentials are configured."""


@dataclass(frozen=True)
class ObjectInfo:
    """An object's stats as lakeFS reports them."""

    path: str
    size: int
    checksum: str
    mtime: int
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitInfo:
    """A commit: its 64-hex id, message, metadata and parents."""

    id: str
    message: str
    metadata: dict[str, str]
    parents: list[str]
    creation_date: int
    committer: str


@dataclass(frozen=True)
class DiffEntry:
    """One changed path: ``kind`` is added, removed, changed or conflict."""

    kind: str
    path: str
    size: int | None = None


class LakeFSClient:
    """One lakeFS repository, through lakeFS API v1."""

    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        secret_access_key: str,
        repository: str,
        *,
        retries: int = 4,
        timeout_seconds: float = 30.0,
        backoff_seconds: float = 0.5,
    ) -> None:
        configuration = lakefs_sdk.Configuration(
            host=endpoint.rstrip("/") + "/api/v1",
            username=access_key_id,
            password=secret_access_key,
        )
        # urllib3 must not retry by itself: this class decides what is safe to send again.
        configuration.retries = urllib3.Retry(total=0, connect=0, read=0, redirect=2, status=0)
        self._api = lakefs_sdk.ApiClient(configuration)
        self.endpoint = endpoint.rstrip("/")
        self.repository = repository
        self.retries = retries
        self.timeout = timeout_seconds
        self.backoff = backoff_seconds
        self.repositories = lakefs_sdk.RepositoriesApi(self._api)
        self.branches = lakefs_sdk.BranchesApi(self._api)
        self.commits = lakefs_sdk.CommitsApi(self._api)
        self.objects = lakefs_sdk.ObjectsApi(self._api)
        self.refs = lakefs_sdk.RefsApi(self._api)
        self.tags = lakefs_sdk.TagsApi(self._api)

    @classmethod
    def from_settings(cls, settings: LakeFSSettings) -> LakeFSClient:
        """A client for the configured endpoint and repository; credentials only from settings."""
        problem = settings.credentials_problem()
        if problem is not None:
            raise CredentialsMissingError(problem)
        key, secret = settings.access_key_id, settings.secret_access_key
        assert key is not None and secret is not None  # credentials_problem said so
        return cls(
            str(settings.endpoint),
            key.get_secret_value(),
            secret.get_secret_value(),
            settings.repository,
            retries=settings.request_retries,
            timeout_seconds=settings.request_timeout_seconds,
        )

    def close(self) -> None:
        self._api.close()

    # -- the retry loop -------------------------------------------------------------------------

    def _call(self, what: str, operation: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``operation``, retrying what is safe to retry, and translate its errors."""
        attempt = 0
        while True:
            try:
                return operation()
            except ApiException as problem:
                status = problem.status or 0
                retryable = status in _RETRY_ALWAYS or (idempotent and status >= 500)
                if not retryable or attempt >= self.retries:
                    raise _translate(what, problem) from None
            except (urllib3.exceptions.HTTPError, OSError) as problem:
                # A refused connection never reached the server: always safe to send again.
                # Other transport errors (a reset mid-request) are only safe for idempotent calls.
                reached = not isinstance(
                    problem, urllib3.exceptions.NewConnectionError | ConnectionRefusedError
                ) and not _is_connect_failure(problem)
                if (reached and not idempotent) or attempt >= self.retries:
                    raise UnavailableError(
                        f"{what}: lakeFS at {self.endpoint} is unreachable ({problem})"
                    ) from None
            delay = self.backoff * (2**attempt)
            attempt += 1
            log.warning("%s failed, retry %d/%d in %.1f s", what, attempt, self.retries, delay)
            time.sleep(delay)

    # -- repositories ---------------------------------------------------------------------------

    def ensure_repository(self, storage_namespace: str, default_branch: str = "main") -> bool:
        """Create the repository unless it exists; True when it was created."""
        try:
            self._call(
                f"get repository {self.repository}",
                lambda: self.repositories.get_repository(
                    self.repository, _request_timeout=self.timeout
                ),
            )
            return False
        except NotFoundError:
            pass
        creation = lakefs_sdk.RepositoryCreation(
            name=self.repository,
            storage_namespace=storage_namespace,
            default_branch=default_branch,
        )
        try:
            self._call(
                f"create repository {self.repository}",
                lambda: self.repositories.create_repository(
                    creation, _request_timeout=self.timeout
                ),
            )
        except ConflictError:
            return False  # created concurrently: fine
        return True

    # -- branches ---------------------------------------------------------------------------------

    def create_branch(self, name: str, source: str) -> str:
        """Create ``name`` from ``source``; returns the commit id it starts at."""
        creation = lakefs_sdk.BranchCreation(name=name, source=source)
        self._call(
            f"create branch {name} from {source}",
            lambda: self.branches.create_branch(
                self.repository, creation, _request_timeout=self.timeout
            ),
        )
        return self.branch_head(name)

    def branch_head(self, name: str) -> str:
        """The commit id a branch points to."""
        ref = self._call(
            f"get branch {name}",
            lambda: self.branches.get_branch(self.repository, name, _request_timeout=self.timeout),
        )
        return str(ref.commit_id)

    def branch_exists(self, name: str) -> bool:
        try:
            self.branch_head(name)
        except NotFoundError:
            return False
        return True

    def delete_branch(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            self._call(
                f"delete branch {name}",
                lambda: self.branches.delete_branch(
                    self.repository, name, _request_timeout=self.timeout
                ),
            )
        except NotFoundError:
            if not missing_ok:
                raise

    def list_branches(self) -> list[str]:
        return [
            str(ref.id)
            for ref in self._pages(
                "list branches",
                lambda after: self.branches.list_branches(
                    self.repository, after=after, amount=PAGE, _request_timeout=self.timeout
                ),
            )
        ]

    # -- objects ----------------------------------------------------------------------------------

    def upload(
        self,
        branch: str,
        path: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_absent: bool = False,
    ) -> ObjectInfo:
        """Write ``data`` at ``path`` on ``branch``; ``if_absent`` refuses to overwrite (412).

        The body goes raw (application/octet-stream upload of lakeFS API v1), not as multipart,
        so the object keeps ``content_type`` and large batches are not copied into a form.
        """
        url = (
            f"{self._api.configuration.host}/repositories/{quote(self.repository, safe='')}"
            f"/branches/{quote(branch, safe='')}/objects?{urlencode({'path': path})}"
        )
        headers = {
            "Content-Type": content_type,
            "Accept": "application/json",
            "Authorization": self._api.configuration.get_basic_auth_token(),
        }
        if if_absent:
            headers["If-None-Match"] = "*"

        def send() -> Any:
            response = self._api.rest_client.pool_manager.request(
                "POST", url, body=data, headers=headers, timeout=self.timeout, retries=False
            )
            if response.status >= 300:
                problem = ApiException(status=response.status, reason=response.reason)
                problem.body = response.data.decode(errors="replace")
                raise problem
            return lakefs_sdk.ObjectStats.from_json(response.data.decode())

        return _object_info(self._call(f"upload {path} to {branch}", send))

    def download(self, ref: str, path: str) -> bytes:
        """The bytes of ``path`` at ``ref`` (a branch, tag or commit id)."""
        return bytes(
            self._call(
                f"download {path} at {ref}",
                lambda: self.objects.get_object(
                    self.repository, ref, path, _request_timeout=self.timeout
                ),
            )
        )

    def stat(self, ref: str, path: str) -> ObjectInfo:
        return _object_info(
            self._call(
                f"stat {path} at {ref}",
                lambda: self.objects.stat_object(
                    self.repository, ref, path, _request_timeout=self.timeout
                ),
            )
        )

    def exists(self, ref: str, path: str) -> bool:
        try:
            self.stat(ref, path)
        except NotFoundError:
            return False
        return True

    def list_objects(self, ref: str, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` at ``ref``, across all pages."""
        return [
            _object_info(stats)
            for stats in self._pages(
                f"list {prefix or '/'} at {ref}",
                lambda after: self.objects.list_objects(
                    self.repository,
                    ref,
                    prefix=prefix,
                    after=after,
                    amount=PAGE,
                    _request_timeout=self.timeout,
                ),
            )
            if stats.path_type == "object"
        ]

    def delete_object(self, branch: str, path: str) -> None:
        self._call(
            f"delete {path} on {branch}",
            lambda: self.objects.delete_object(
                self.repository, branch, path, _request_timeout=self.timeout
            ),
        )

    # -- commits, log, refs -------------------------------------------------------------------

    def commit(
        self, branch: str, message: str, metadata: dict[str, str] | None = None
    ) -> CommitInfo:
        """Commit the staged changes of ``branch``; NothingToCommitError when there are none."""
        creation = lakefs_sdk.CommitCreation(message=message, metadata=metadata or {})
        commit = self._call(
            f"commit on {branch}",
            lambda: self.commits.commit(
                self.repository, branch, creation, _request_timeout=self.timeout
            ),
            idempotent=False,
        )
        return _commit_info(commit)

    def get_commit(self, ref: str) -> CommitInfo:
        """The commit ``ref`` names: a branch, tag, commit id, or any of them with ``~N``."""
        commit = self._call(
            f"get commit {ref}",
            lambda: self.commits.get_commit(self.repository, ref, _request_timeout=self.timeout),
        )
        return _commit_info(commit)

    def resolve(self, ref: str) -> str:
        """The 64-hex commit id behind ``ref``, which never moves, unlike a branch."""
        return self.get_commit(ref).id

    def log(self, ref: str, amount: int = 100, *, first_parent: bool = False) -> list[CommitInfo]:
        """The newest ``amount`` commits reachable from ``ref`` (across pages)."""
        commits: list[CommitInfo] = []
        for commit in self._pages(
            f"log {ref}",
            lambda after: self.refs.log_commits(
                self.repository,
                ref,
                after=after,
                amount=min(amount, PAGE),
                first_parent=first_parent,
                _request_timeout=self.timeout,
            ),
        ):
            commits.append(_commit_info(commit))
            if len(commits) >= amount:
                break
        return commits

    def tag(self, name: str, ref: str) -> str:
        """Tag the commit ``ref`` names; returns the commit id."""
        creation = lakefs_sdk.TagCreation(id=name, ref=ref)
        tagged = self._call(
            f"tag {ref} as {name}",
            lambda: self.tags.create_tag(self.repository, creation, _request_timeout=self.timeout),
        )
        return str(tagged.commit_id)

    # -- diff and merge -------------------------------------------------------------------------

    def diff(self, left: str, right: str, *, two_dot: bool = False) -> list[DiffEntry]:
        """What changed from ``left`` to ``right`` (since their merge base unless ``two_dot``)."""
        return [
            DiffEntry(str(item.type), str(item.path), item.size_bytes)
            for item in self._pages(
                f"diff {left}..{right}",
                lambda after: self.refs.diff_refs(
                    self.repository,
                    left,
                    right,
                    after=after,
                    amount=PAGE,
                    type="two_dot" if two_dot else "three_dot",
                    _request_timeout=self.timeout,
                ),
            )
        ]

    def uncommitted(self, branch: str) -> list[DiffEntry]:
        """The staged, uncommitted changes of ``branch``."""
        return [
            DiffEntry(str(item.type), str(item.path), item.size_bytes)
            for item in self._pages(
                f"diff uncommitted {branch}",
                lambda after: self.branches.diff_branch(
                    self.repository, branch, after=after, amount=PAGE, _request_timeout=self.timeout
                ),
            )
        ]

    def merge(
        self,
        source: str,
        destination: str,
        *,
        message: str = "",
        metadata: dict[str, str] | None = None,
        strategy: str | None = None,
    ) -> str:
        """Merge ``source`` into branch ``destination``; returns the merge commit id.

        Raises:
            MergeConflictError: both sides changed the same paths; ``paths`` lists them.
            NothingToCommitError: ``source`` has nothing that ``destination`` lacks.
        """
        merge = lakefs_sdk.Merge(
            message=message or None, metadata=metadata or {}, strategy=strategy
        )
        try:
            result = self._call(
                f"merge {source} into {destination}",
                lambda: self.refs.merge_into_branch(
                    self.repository, source, destination, merge=merge, _request_timeout=self.timeout
                ),
                idempotent=False,
            )
        except ConflictError:
            raise MergeConflictError(
                source, destination, self.conflicting_paths(source, destination)
            ) from None
        return str(result.reference)

    def conflicting_paths(self, source: str, destination: str) -> list[str]:
        """Paths both sides changed since their merge base, and not to the same result.

        lakeFS answers a conflicting merge with 409 and no paths, so they are worked out from the
        two three-dot diffs; this works the same against real lakeFS.
        """
        ours = {entry.path: entry for entry in self.diff(source, destination)}
        theirs = {entry.path: entry for entry in self.diff(destination, source)}
        conflicts = []
        for path in sorted(ours.keys() & theirs.keys()):
            if ours[path].kind == theirs[path].kind == "removed":
                continue
            if self._same_object(source, destination, path):
                continue
            conflicts.append(path)
        return conflicts

    def _same_object(self, left: str, right: str, path: str) -> bool:
        try:
            return self.stat(left, path).checksum == self.stat(right, path).checksum
        except NotFoundError:
            return False

    # -- helpers ---------------------------------------------------------------------------------

    def _pages(self, what: str, fetch: Callable[[str], Any]) -> Iterator[Any]:
        after = ""
        while True:
            listing = self._call(what, functools.partial(fetch, after))
            yield from listing.results
            if not listing.pagination.has_more:
                return
            after = listing.pagination.next_offset


def _translate(what: str, problem: ApiException) -> LakeFSError:
    status = problem.status or 0
    message = f"{what}: {_message(problem)} (HTTP {status})"
    if status == 404:
        return NotFoundError(message, status)
    if status == 409:
        return ConflictError(message, status)
    if status == 412:
        return PreconditionFailedError(message, status)
    if status == 400 and "no changes" in message.lower():
        return NothingToCommitError(message, status)
    if status >= 500 or status in _RETRY_ALWAYS:
        return UnavailableError(message, status)
    return LakeFSError(message, status)


def _message(problem: ApiException) -> str:
    try:
        return str(json.loads(problem.body or "{}").get("message") or problem.reason)
    except (ValueError, AttributeError):
        return str(problem.reason)


def _is_connect_failure(problem: BaseException) -> bool:
    """Whether a urllib3 error (MaxRetryError wraps the cause) happened before any byte was sent."""
    reason = getattr(problem, "reason", None)
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    ) or isinstance(problem, urllib3.exceptions.ConnectTimeoutError)


def _object_info(stats: Any) -> ObjectInfo:
    return ObjectInfo(
        path=str(stats.path),
        size=int(stats.size_bytes or 0),
        checksum=str(stats.checksum),
        mtime=int(stats.mtime),
        content_type=str(stats.content_type or ""),
        metadata=dict(stats.metadata or {}),
    )


def _commit_info(commit: Any) -> CommitInfo:
    return CommitInfo(
        id=str(commit.id),
        message=str(commit.message),
        metadata=dict(commit.metadata or {}),
        parents=list(commit.parents),
        creation_date=int(commit.creation_date),
        committer=str(commit.committer),
    )
