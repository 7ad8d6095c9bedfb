"""Publishing one export version so that no crash point shows a broken one.

Readers and what they watch:
  - TF Serving loads any new numeric folder under `query_tower/` (its base path);
  - the retrieval service follows `export_manifest.json`;
  - the next export picks the version above every numeric folder.

So a version is staged whole under `.tmp-<v>-<pid>/`, every file and folder of it
fsynced, the version manifest written there too; then the parts are renamed into place
with `query_tower/<v>` after the item side, and `export_manifest.json` replaced last.
Any failure after the first rename moves the published parts back out (nothing of v
stays visible) and leaves the old manifest. One exclusive lock (`.lock`, flock) covers
choosing the version through the manifest swap, so concurrent exports queue instead of
colliding on one staging folder; stale staging folders of crashed exports are removed
under it.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Any

from common import contracts
from common.exit_codes import RetryableError

LOCK_FILE = ".lock"
STAGING_PREFIX = ".tmp-"
VERSIONED = (contracts.QUERY_TOWER_DIR, contracts.ITEMS_DIR, contracts.RETRIEVAL_DIR)
# The order parts go live; the query tower, which TF Serving loads on sight, last.
PUBLISH_ORDER = (contracts.ITEMS_DIR, contracts.RETRIEVAL_DIR, contracts.QUERY_TOWER_DIR)


class ExportLocked(RetryableError):
    """Another export holds the export directory's lock past the timeout."""


@contextlib.contextmanager
def export_lock(export_dir: str, timeout_s: float) -> Iterator[None]:
    """Holds `export_dir/.lock` exclusively; waits up to `timeout_s` for another export.

    Raises:
      ExportLocked: the lock is still held after `timeout_s` (the message names the
        holder's pid, which it writes into the file).
    """
    os.makedirs(export_dir, exist_ok=True)
    path = os.path.join(export_dir, LOCK_FILE)
    with open(path, "a+") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "unknown"
                    raise ExportLocked(
                        f"{path}: another export (pid {holder}) holds the lock after "
                        f"{timeout_s:g} s; wait for it or raise --lock-timeout-s"
                    ) from None
                time.sleep(0.2)
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def versions(base: str) -> list[int]:
    """The numeric version folders under `base`, ascending."""
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base) if name.isdigit())


def next_version(export_dir: str, version: int) -> int:
    """`version`, or one above every published version when 0.

    Raises:
      FileExistsError: `version` is taken in any part (versions are never overwritten).
    """
    taken = [v for base in VERSIONED for v in versions(os.path.join(export_dir, base))]
    version = version or (max(taken, default=0) + 1)
    for base in VERSIONED:
        final = os.path.join(export_dir, base, str(version))
        if os.path.exists(final):
            raise FileExistsError(f"{final} exists; versions are never overwritten")
    return version


def staging_dir(export_dir: str, version: int) -> str:
    return os.path.join(export_dir, f"{STAGING_PREFIX}{version}-{os.getpid()}")


def remove_stale_staging(export_dir: str) -> list[str]:
    """Removes staging folders of crashed exports (call it holding the lock)."""
    removed = []
    for name in sorted(os.listdir(export_dir)):
        if name.startswith(STAGING_PREFIX):
            shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)
            removed.append(name)
    return removed


def fsync_tree(folder: str) -> None:
    """fsyncs every file under `folder`, then every folder bottom-up (so renames of and
    into them are durable too)."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync_path(os.path.join(root, name), os.O_RDONLY)
        _fsync_path(root, os.O_RDONLY | os.O_DIRECTORY)
        del dirs


def _fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str, value: Any) -> None:
    """Writes `value` as JSON to `path` and fsyncs it."""
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def publish(export_dir: str, staging: str, version: int, manifest: dict[str, Any]) -> None:
    """Moves the staged parts of `version` into place, then swaps the export manifest.

    On any failure the parts already moved are moved back (TF Serving's view and the
    manifest keep agreeing on the previous version) and the error is raised.
    """
    temporary = os.path.join(staging, contracts.EXPORT_MANIFEST)
    write_json(temporary, manifest)
    write_json(os.path.join(staging, contracts.ITEMS_DIR, contracts.VERSION_MANIFEST), manifest)
    fsync_tree(staging)
    moved: list[tuple[str, str]] = []
    try:
        for part in PUBLISH_ORDER:
            source = os.path.join(staging, part)
            if not os.path.exists(source):
                continue
            base = os.path.join(export_dir, part)
            os.makedirs(base, exist_ok=True)
            target = os.path.join(base, str(version))
            os.rename(source, target)
            moved.append((source, target))
            _fsync_path(base, os.O_RDONLY | os.O_DIRECTORY)
        os.replace(temporary, os.path.join(export_dir, contracts.EXPORT_MANIFEST))
    except BaseException:
        _move_back(moved)
        raise
    _fsync_path(export_dir, os.O_RDONLY | os.O_DIRECTORY)  # v is live: no way back now


def _move_back(moved: Sequence[tuple[str, str]]) -> None:
    """Undoes `publish`'s renames, the last first (the query tower leaves first)."""
    for source, target in reversed(moved):
        try:
            os.rename(target, source)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
