"""Small file helpers over Beam's `FileSystems`, so that local paths, gs://, s3:// and
hdfs:// outputs work alike (the dataset is written where the runner's workers can reach).
"""

import io
import os
from collections.abc import Iterable, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def absolute(path: str) -> str:
    """A local path made absolute (Beam workers may run elsewhere); URLs unchanged."""
    return os.path.abspath(path) if is_local(path) else path.rstrip("/")


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def write_lines(path: str, lines: Iterable[str]) -> None:
    """Writes text lines (each with its newline) to `path`, creating local folders."""
    if is_local(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        writer = io.TextIOWrapper(f, encoding="utf-8")
        writer.writelines(lines)
        writer.flush()
        writer.detach()


def read_lines(path: str) -> Iterator[str]:
    """The lines of a text file without their newlines (gzip by extension)."""
    with FileSystems.open(path) as f:
        for raw in iter(f.readline, b""):
            yield raw.decode("utf-8").rstrip("\n")


def match(pattern: str) -> list[str]:
    """The files matching a glob, sorted (none is fine)."""
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def list_files(folder: str) -> list[str]:
    """Every file under `folder` (recursively), sorted."""
    return match(join(folder, "**"))


def delete_file(path: str) -> None:
    FileSystems.delete([path])


def delete_tree(folder: str, first: str = "") -> None:
    """Deletes a folder and everything under it; a missing folder is fine.

    Args:
      folder: what to delete.
      first: a file inside it deleted before the rest (the manifest: a dataset being
        replaced must stop looking complete before its shards go).
    """
    if first and exists(join(folder, first)):
        delete_file(join(folder, first))
    if is_local(folder):
        import shutil  # noqa: PLC0415

        shutil.rmtree(folder, ignore_errors=True)
        return
    files = list_files(folder)
    if files:
        FileSystems.delete(files)


def move_tree(source: str, destination: str, last: str) -> None:
    """Moves the folder `source` to `destination`, the file named `last` at the very end.

    Locally one rename (atomic). On object stores every file is renamed on its own, so
    `last` (the manifest) arrives only after everything else: a reader that waits for it
    never sees a half-moved dataset.
    """
    if is_local(source) and is_local(destination):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.rename(source, destination)
        return
    files = list_files(source)
    first = [f for f in files if os.path.basename(f) != last]
    final = [f for f in files if os.path.basename(f) == last]
    for group in (first, final):
        if group:
            targets = [destination + f[len(source) :] for f in group]
            FileSystems.rename(group, targets)
