"""Importing a zip of images beside a JSON Lines file: ``items_import_zip``.

A row may carry ``image``: the path of a file inside the zip, relative to the JSON Lines file's folder. A row with
an image may leave ``text`` out; its text is then ``[image: <file name>]`` (the text tier embeds something, and
exports show which file it was).

How it runs, in three passes, so that the one import service (labeling/services/items_import) still decides
every row and nothing it refuses gets an image:

1. **Stage.** The data file is read line by line. A line without ``image`` passes through as it was. A line
   with one has its image read from the archive (labeling/services/images/archive.py) and re-encoded
   (labeling/services/images/decode.py) into a temporary folder; the line passes on without its ``image``. An
   image that is refused turns its line blank (the import skips blank lines, so line numbers stay the file's)
   and the refusal is the line's error: ``image: SVG is not accepted ...``.
2. **Import.** ``items_import`` reads the staged file: the same validation, idempotency and per-line errors as
   every other import.
3. **Attach.** Each staged image whose line the import accepted is written to the ``images`` storage and
   attached to its item (labeling/services/images/store.py). A line the import refused attaches nothing, even
   where an earlier import made an item with that external id.

With ``atomic`` and any refused image, nothing is imported (the import is not run; the summary lists the
refused images). The temporary folder goes when the import ends, whatever happens.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
from django.conf import settings

from labeling.models import Item, Project
from labeling.services.audit import Actor
from labeling.services.images.archive import ImageArchive
from labeling.services.images.decode import DerivedImage, ImageRefused, configure, image_derive
from labeling.services.images.store import item_image_attach
from labeling.services.items_import import UTF8_BOM, ImportSummary, items_import

MAX_LINE_BYTES = 16 * 1024 * 1024
ATTACH_BATCH = 500


@dataclass(frozen=True)
class _Staged:
    """A row's re-encoded image, waiting in the temporary folder (never in memory: an import may hold 100,000)."""

    line: int
    derived: DerivedImage  # with empty display/thumb bytes: those are in the files below
    display: Path
    thumb: Path
    source_name: str
    original: Path | None

    def loaded(self) -> DerivedImage:
        return dataclasses.replace(self.derived, display=self.display.read_bytes(), thumb=self.thumb.read_bytes())


def items_import_zip(*, actor: Actor, project: Project, source: IO[bytes], gold: bool = False,
                     atomic: bool = False, progress: Callable[[ImportSummary], None] | None = None) -> ImportSummary:
    """Import the zip ``source`` (seekable): its JSON Lines rows, with their images. See the module essay."""
    configure(max_pixels=settings.SIFT_MAX_IMAGE_PIXELS)
    archive = ImageArchive(source, max_members=settings.SIFT_MAX_ZIP_MEMBERS,
                           max_inflated_bytes=settings.SIFT_MAX_ZIP_INFLATED_BYTES)
    with tempfile.TemporaryDirectory(prefix="sift-images-") as folder:
        staged_path = Path(folder) / "rows.jsonl"
        refused: list[tuple[int, str]] = []
        staged: dict[str, _Staged] = {}
        with archive.open_data() as data, staged_path.open("wb") as out:
            line_no = 0
            while raw := data.readline(MAX_LINE_BYTES + 1):
                line_no += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while (rest := data.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                        pass
                    refused.append((line_no, f"line is longer than {MAX_LINE_BYTES:,} bytes"))
                    out.write(b"\n")
                    continue
                out.write(_stage_line(raw, line_no, archive, Path(folder), project, staged, refused) + b"\n")
        if atomic and refused:
            summary = ImportSummary()
        else:
            with staged_path.open("rb") as rows:
                summary = items_import(actor=actor, project=project, source=rows, filename=archive.data_name,
                                       file_format="jsonl", gold=gold, atomic=atomic, progress=progress)
            if not (atomic and not summary.ok):
                _attach(project, staged, summary)
        for line, message in refused:
            summary.add_error(line, message)
    return summary


def _stage_line(raw: bytes, line_no: int, archive: ImageArchive, folder: Path, project: Project,
                staged: dict[str, _Staged], refused: list[tuple[int, str]]) -> bytes:
    """The line as the import should read it (blank when its image is refused); stages the row's image."""
    line = raw.rstrip(b"\r\n")
    body = line[len(UTF8_BOM):] if line_no == 1 and line.startswith(UTF8_BOM) else line
    try:
        row = orjson.loads(body)
    except orjson.JSONDecodeError:
        return line  # the import words the error
    if not isinstance(row, dict) or row.get("image") is None:
        return line
    path = row.pop("image")
    try:
        source_name, data = archive.read_image(path, max_bytes=settings.SIFT_MAX_IMAGE_BYTES)
        derived = image_derive(data, max_bytes=settings.SIFT_MAX_IMAGE_BYTES)
    except ImageRefused as exc:
        refused.append((line_no, f"image: {exc}"))
        return b""
    if row.get("text") in (None, ""):
        row["text"] = f"[image: {source_name}]"
    external_id = row.get("external_id")
    if isinstance(external_id, str | int | float) and not isinstance(external_id, bool):  # as the import reads it
        original: Path | None = None
        if project.keep_image_originals:
            original = folder / f"{line_no}.original"
            original.write_bytes(data)
        display, thumb = folder / f"{line_no}.display", folder / f"{line_no}.thumb"
        display.write_bytes(derived.display)
        thumb.write_bytes(derived.thumb)
        staged[str(external_id)] = _Staged(line=line_no, derived=dataclasses.replace(derived, display=b"", thumb=b""),
                                      display=display, thumb=thumb, source_name=source_name, original=original)
    try:
        return orjson.dumps(row)
    except TypeError:  # an integer beyond 64 bits: json writes it exactly
        return json.dumps(row, ensure_ascii=False).encode()


def _attach(project: Project, staged: dict[str, _Staged], summary: ImportSummary) -> None:
    refused_lines = {error["line"] for error in summary.errors}
    unlisted_from = summary.first_unlisted_line

    def accepted(entry: _Staged) -> bool:
        return entry.line not in refused_lines and (unlisted_from is None or entry.line < unlisted_from)

    wanted = {external_id: entry for external_id, entry in staged.items() if accepted(entry)}
    names = list(wanted)
    for start in range(0, len(names), ATTACH_BATCH):
        batch = names[start:start + ATTACH_BATCH]
        for item in Item.objects.filter(project=project, external_id__in=batch):
            entry = wanted[item.external_id]
            item_image_attach(item=item, derived=entry.loaded(), source_name=entry.source_name,
                              original=entry.original.read_bytes() if entry.original is not None else None)


