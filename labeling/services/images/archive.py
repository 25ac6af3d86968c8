"""Reading a zip upload without trusting it: ``ImageArchive``.

* **Nothing is extracted to disk.** Members are read into memory by name, one at a time, so a member called
  ``../../etc/cron.d/x`` (zip-slip) has nowhere to land; a row whose ``image`` names such a path (``..``, an
  absolute path, a backslash, a drive letter, NUL) is refused by line before any member is looked up.
* **Zip bombs are bounded before inflating.** The member count and the sum of the members' declared sizes are
  capped (``SIFT_MAX_ZIP_MEMBERS``, ``SIFT_MAX_ZIP_INFLATED_BYTES``), and Python's reader never inflates a member
  past its declared size (a lying header ends in a CRC error), so one image costs at most the image byte cap.
* **One data file.** The archive holds exactly one JSON Lines file (``.jsonl``/``.ndjson``) anywhere outside
  ``__MACOSX``; image paths in its rows are relative to that file's folder.
"""

from __future__ import annotations

import posixpath
import zipfile
from typing import IO

from labeling.services.errors import ValidationFailed
from labeling.services.images.decode import ImageRefused

DATA_SUFFIXES = (".jsonl", ".ndjson")
MAX_IMAGE_PATH_CHARS = 1024


def upload_is_zip(upload: IO[bytes]) -> bool:
    """Does the seekable ``upload`` start with a zip's magic? (It is rewound either way.)"""
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    return head in (b"PK\x03\x04", b"PK\x05\x06")


class ImageArchive:
    """An opened zip upload: its one data file and its image members (see the module essay)."""

    def __init__(self, source: IO[bytes], *, max_members: int, max_inflated_bytes: int) -> None:
        try:
            self._zip = zipfile.ZipFile(source)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
            raise ValidationFailed(f"file: not a readable zip archive ({exc})", field="file") from None
        if len(infos) > max_members:
            raise ValidationFailed(f"file: the archive has {len(infos):,} members; the limit is {max_members:,}",
                                   field="file")
        inflated = sum(info.file_size for info in infos)
        if inflated > max_inflated_bytes:
            raise ValidationFailed(f"file: the archive inflates to {inflated:,} bytes; the limit is "
                                   f"{max_inflated_bytes:,}: nothing was imported", field="file")
        self._members = {info.filename: info for info in infos if not info.is_dir() and _safe(info.filename)}
        data = [name for name in self._members
                if name.lower().endswith(DATA_SUFFIXES) and not name.startswith("__MACOSX/")]
        if len(data) != 1:
            found = ", ".join(sorted(data)[:5]) or "none"
            raise ValidationFailed(f"file: a zip upload must hold exactly one JSON Lines file (.jsonl or .ndjson) "
                                   f"beside its images; found {found}", field="file")
        self.data_name = data[0]
        self._folder = posixpath.dirname(self.data_name)

    def open_data(self) -> IO[bytes]:
        return self._zip.open(self._members[self.data_name])

    def read_image(self, path: object, *, max_bytes: int) -> tuple[str, bytes]:
        """The member ``path`` names (relative to the data file's folder) and its bytes, or ``ImageRefused``."""
        if not isinstance(path, str) or not path.strip():
            raise ImageRefused("must be the path of a file inside the zip (a non-empty string)")
        if len(path) > MAX_IMAGE_PATH_CHARS or not _safe(path):
            raise ImageRefused(f"{path[:80]!r} is not a safe path inside the archive (no '..', absolute paths, "
                               "backslashes or drive letters)")
        name = posixpath.join(self._folder, path) if self._folder else path
        info = self._members.get(name)
        if info is None:
            raise ImageRefused(f"{path[:80]!r}: no such file in the archive")
        if info.file_size > max_bytes:
            raise ImageRefused(f"{path[:80]!r}: {info.file_size:,} bytes; the limit is {max_bytes:,}")
        try:
            with self._zip.open(info) as member:
                data = member.read(max_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ImageRefused(f"{path[:80]!r}: cannot be read from the archive ({exc})") from None
        return posixpath.basename(name), data


def _safe(name: str) -> bool:
    """A relative POSIX path that stays inside the archive: no '..', absolute paths, backslashes, drives or NUL."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return False
    return all(part not in ("..", ".", "") for part in name.split("/"))
