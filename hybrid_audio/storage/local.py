"""Local mode: the objects are this machine's stem and output files (no credentials).

An object name maps to its file through `base.resolve` (the stems and output folders from
`Settings`), so a name that is not a stem or output name — `..`, an absolute path, another
folder — is refused before any disk access. Reads go through `files.read_inside`, which
refuses symbolic links and anything but a regular file; uploads create the file with
`files.create_new` (fsynced temp file, then `os.link`, which never overwrites).

There is no metadata store here: the stem index is the metadata, so `ObjectInfo.metadata`
is always empty. Listings skip temp files (`.<name>.<pid>.….tmp`), dot-files, links and
any name `parse_object_name` rejects; they run in name order with the last name returned
as the page token.
"""

from __future__ import annotations

import bisect
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from hybrid_audio.config import Settings
from hybrid_audio.files import (
    UnsafeFileError,
    create_new,
    fsync_folder,
    read_inside,
    storage_errors,
)
from hybrid_audio.storage.base import (
    OUTPUT_PREFIX,
    STEMS_PREFIX,
    Mode,
    ObjectExistsError,
    ObjectInfo,
    ObjectMissingError,
    ObjectPage,
    StorageDescription,
    UploadItem,
    crc32c_of,
    parse_object_name,
    resolve,
)


class LocalStore:
    """The base dir's stem and output files, spoken to as objects."""

    mode: Mode = "local"

    def __init__(self, settings: Settings) -> None:
        self.stems_dir = Path(settings.stems_dir)
        self.output_dir = Path(settings.output_dir)
        self._settings = settings

    def describe(self) -> StorageDescription:
        return StorageDescription(mode="local", bucket=None, prefix="")

    # --- one object --------------------------------------------------------------------

    def _locate(self, name: str) -> tuple[Path, Path]:
        """(folder, path relative to it) of `name`; `ValueError` for any other name."""
        path = resolve(self._settings, name)
        folder = self.stems_dir if name.startswith(STEMS_PREFIX) else self.output_dir
        return folder, path.relative_to(folder)

    def upload(
        self, name: str, data: bytes, metadata: Mapping[str, str], content_type: str
    ) -> ObjectInfo:
        """Create the file (never overwrite: `ObjectExistsError`); metadata is not kept."""
        folder, relative = self._locate(name)
        path = folder / relative
        if path.parent != folder and path.parent.is_symlink():
            raise UnsafeFileError(f"{relative.parent} in {folder.name}/ is a symbolic link")
        if not create_new(path, data):
            raise ObjectExistsError(name)
        return self._info(name, data, os.stat(path))

    def download(self, name: str) -> tuple[bytes, ObjectInfo]:
        """The file's bytes (`ObjectMissingError` if absent; a link is `UnsafeFileError`)."""
        folder, relative = self._locate(name)
        try:
            data, info = read_inside(folder, relative)
        except FileNotFoundError:
            raise ObjectMissingError(name) from None
        return data, self._info(name, data, info)

    def info(self, name: str) -> ObjectInfo | None:
        try:
            return self.download(name)[1]
        except ObjectMissingError:
            return None

    def exists(self, name: str) -> bool:
        folder, relative = self._locate(name)
        try:
            return stat.S_ISREG(os.lstat(folder / relative).st_mode)
        except FileNotFoundError:
            return False

    def delete(self, name: str) -> bool:
        """Remove the file; a link in its place is refused (`UnsafeFileError`), not followed."""
        folder, relative = self._locate(name)
        path = folder / relative
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(mode):
            raise UnsafeFileError(f"{relative} in {folder.name}/ is not a regular file")
        with storage_errors(path.parent):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            fsync_folder(path.parent)
        return True

    @staticmethod
    def _info(name: str, data: bytes, info: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            name=name,
            size=len(data),
            crc32c=crc32c_of(data),
            updated=datetime.fromtimestamp(info.st_mtime, tz=UTC).isoformat(),
        )

    # --- listing -----------------------------------------------------------------------

    def _names(self, prefix: str) -> list[str]:
        """Every object name under `prefix`, sorted (regular files only, links skipped)."""
        names: list[str] = []
        for area, folder in ((STEMS_PREFIX, self.stems_dir), (OUTPUT_PREFIX, self.output_dir)):
            if not (area.startswith(prefix) or prefix.startswith(area)):
                continue
            if area == STEMS_PREFIX:
                relatives = [
                    f"{kind.name}/{entry.name}"
                    for kind in _entries(folder)
                    if kind.is_dir(follow_symlinks=False)
                    for entry in _entries(Path(kind.path))
                    if entry.is_file(follow_symlinks=False)
                ]
            else:
                relatives = [e.name for e in _entries(folder) if e.is_file(follow_symlinks=False)]
            names.extend(
                area + relative
                for relative in relatives
                if (area + relative).startswith(prefix)
                and parse_object_name(area + relative) is not None
            )
        return sorted(names)

    def list_page(self, prefix: str, limit: int, page_token: str | None = None) -> ObjectPage:
        """At most `limit` objects after `page_token` (the last name of the previous page)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        names = self._names(prefix)
        start = bisect.bisect_right(names, page_token) if page_token else 0
        chosen = names[start : start + limit]
        objects = [info for info in map(self.info, chosen) if info is not None]
        more = start + limit < len(names)
        return ObjectPage(objects=objects, next_page_token=chosen[-1] if more else None)

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        for name in self._names(prefix):
            info = self.info(name)
            if info is not None:  # removed since the listing
                yield info

    # --- bulk (sequential: the disk gains nothing from threads here) --------------------

    def upload_many(
        self, items: Sequence[UploadItem], workers: int | None = None
    ) -> list[ObjectInfo | Exception]:
        results: list[ObjectInfo | Exception] = []
        for name, data, metadata, content_type in items:
            try:
                results.append(self.upload(name, data, metadata, content_type))
            except (OSError, ValueError, KeyError) as error:
                results.append(error)
        return results

    def download_many(
        self, names: Sequence[str], workers: int | None = None
    ) -> list[bytes | Exception]:
        results: list[bytes | Exception] = []
        for name in names:
            try:
                results.append(self.download(name)[0])
            except (OSError, ValueError, KeyError) as error:
                results.append(error)
        return results


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of `folder` (none if it does not exist yet); dot-files skipped."""
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if not entry.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
