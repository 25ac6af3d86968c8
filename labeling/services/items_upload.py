"""The decompressed-size cap of an uploaded gzip, checked BEFORE the import writes anything: ``items_upload_check``.

Why a separate pass: the import (``items_import``) streams and commits chunk by chunk, so by the time its line
reader meets the cap, earlier chunks are already committed and the answer would be a 200 with a partial import
(finding U1). A gzip bomb is not "some bad rows": it is a refused upload, and the caller must get a 413 with
nothing imported. So an upload whose first bytes are gzip's magic is inflated once here, counting bytes (and
newlines, to name the line where the cap falls) without keeping any of it, and stopping at the cap. Only an
upload that fits is handed to the import, rewound.

The count is the one the import's line reader makes (``gzip.GzipFile.read1`` over the same bytes, concatenated
members included), so a body that passes here never trips the reader's own cap, which stays as the backstop.
A corrupt or truncated gzip stops the count early and passes: the import reports it by line, as it always did.

The cost: gzip bodies are inflated twice. Inflating runs at hundreds of MB/s against the import's tens of
MB/s of parsing and COPY, so the check adds a few per cent to a gzip import and nothing to a plain one.
A request body (``application/x-ndjson``) cannot be rewound, so a gzipped one is first spooled to a temporary
file (its compressed size is already capped by ``SIFT_MAX_UPLOAD_BYTES``); a multipart upload is on disk already.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from typing import IO, Any

from django.conf import settings

from labeling.services.errors import ServiceError
from labeling.services.items_import import GZIP_MAGIC, READ_BYTES, BinarySource

# Spooled request bodies stay in memory up to this size, then go to disk.
SPOOL_MEMORY_BYTES = 2 * 1024 * 1024


class UploadTooLarge(ServiceError):
    status = 413
    code = "too_large"


def items_upload_check(*, source: Any, rewindable: bool) -> BinarySource:
    """``source`` ready for ``items_import``, or ``UploadTooLarge`` when it is gzip over the decompressed cap.

    ``rewindable``: ``source`` supports ``seek(0)`` (a multipart upload); otherwise (a request stream) a gzip
    body is spooled to a temporary file first and that file is returned. A plain body is returned untouched
    (only its first bytes read, and replayed).
    """
    head = _read_head(source)
    if not head.startswith(GZIP_MAGIC):
        if rewindable:
            source.seek(0)
            return source  # type: ignore[no-any-return]
        return _Prefixed(head, source)
    spool: IO[bytes]
    if rewindable:
        spool = source
        spool.seek(0)
    else:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 (handed to the caller)
        spool.write(head)
        limit = settings.SIFT_MAX_UPLOAD_BYTES
        written = len(head)
        while chunk := source.read(READ_BYTES):
            written += len(chunk)
            if written > limit:
                spool.close()
                raise UploadTooLarge(f"the upload is larger than the limit of {limit:,} bytes")
            spool.write(chunk)
        spool.seek(0)
    cap = settings.SIFT_MAX_DECOMPRESSED_BYTES
    over_at_line = _over_cap_line(spool, cap)
    if over_at_line is not None:
        if not rewindable:
            spool.close()
        raise UploadTooLarge(
            f"the decompressed data is larger than the limit of {cap:,} bytes (reached at line {over_at_line:,}): "
            f"nothing was imported",
            created=0, updated=0, unchanged=0,
            errors=[{"line": over_at_line, "error": f"the decompressed data is larger than the limit of {cap:,} "
                                                    f"bytes: nothing was imported"}],
        )
    spool.seek(0)
    return spool


def _read_head(source: Any) -> bytes:
    head: bytes = source.read(len(GZIP_MAGIC))
    while 0 < len(head) < len(GZIP_MAGIC):  # a stream may hand over fewer bytes than asked
        more = source.read(len(GZIP_MAGIC) - len(head))
        if not more:
            break
        head += more
    return head


def _over_cap_line(compressed: IO[bytes], cap: int) -> int | None:
    """The 1-based line at which inflating ``compressed`` passes ``cap`` bytes; None when it fits (or is corrupt)."""
    inflated = gzip.GzipFile(fileobj=compressed, mode="rb")
    total = 0
    newlines = 0
    try:
        while chunk := inflated.read1(READ_BYTES):
            if total + len(chunk) > cap:
                return newlines + chunk.count(b"\n", 0, cap - total) + 1
            total += len(chunk)
            newlines += chunk.count(b"\n")
    except (EOFError, OSError, zlib.error):
        return None  # corrupt or truncated: the import reports it by line
    return None


class _Prefixed:
    """A read()-able that replays the bytes read to sniff the magic, then the rest of the stream."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._rest.read(size)  # type: ignore[no-any-return]
        if size is None or size < 0:
            out, self._head = self._head, b""
            return out + self._rest.read()  # type: ignore[no-any-return]
        out, self._head = self._head[:size], self._head[size:]
        return out
