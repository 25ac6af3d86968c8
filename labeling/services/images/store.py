"""Derived image files in Django's ``images`` storage, and their ``ItemImage`` rows: ``item_image_attach``,
``item_images_purge``, ``image_storage``.

Names are ``p<project>/i<item>/<sha16>-display.<ext>`` (and ``-thumb``, ``-original``): one folder per item, so
deleting an item's files never needs to know whether another item shares them. A new image for an item writes its
files first, then points the row at them, and deletes the old files only after that commits (a reader never
follows a row to a deleted file). Hard deletion (labeling/services/privacy.py) calls ``item_images_purge``
inside its transaction: the rows go with the items, the files once the deletion has committed.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import transaction

from labeling.models import Item, ItemImage
from labeling.services.images.decode import DerivedImage

logger = logging.getLogger(__name__)

STORAGE_ALIAS = "images"


def image_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def item_image_attach(*, item: Item, derived: DerivedImage, source_name: str, original: bytes | None) -> bool:
    """Point ``item``'s image at ``derived`` (writing its files); False when it already shows that very image."""
    current = ItemImage.objects.filter(item=item).first()
    if current is not None and current.source_sha256 == derived.source_sha256 \
            and bool(current.original_name) == (original is not None):
        return False
    storage = image_storage()
    stem = f"p{item.project_id}/i{item.pk}/{derived.source_sha256[:16]}"
    written = [storage.save(f"{stem}-display.{derived.extension}", ContentFile(derived.display)),
               storage.save(f"{stem}-thumb.{derived.extension}", ContentFile(derived.thumb))]
    if original is not None:
        suffix = {"JPEG": "jpg"}.get(derived.source_format, derived.source_format.lower())
        written.append(storage.save(f"{stem}-original.{suffix}", ContentFile(original)))
    fields: dict[str, Any] = {
        "project_id": item.project_id, "display_name": written[0], "thumb_name": written[1],
        "original_name": written[2] if original is not None else "", "content_type": derived.content_type,
        "source_name": posixpath.basename(source_name)[:255], "source_format": derived.source_format,
        "source_sha256": derived.source_sha256, "width": derived.width, "height": derived.height,
        "display_width": derived.display_width, "display_height": derived.display_height,
    }
    try:
        with transaction.atomic():
            ItemImage.objects.update_or_create(item=item, defaults=fields)
    except Exception:
        _delete_files(written)
        raise
    if current is not None:
        old = [name for name in current.stored_names() if name not in written]
        transaction.on_commit(lambda: _delete_files(old))
    return True


def item_images_purge(item_ids: Sequence[int]) -> int:
    """Delete the images of ``item_ids`` (call inside the deleting transaction): rows now, files after commit."""
    rows = list(ItemImage.objects.filter(item_id__in=list(item_ids)))
    if not rows:
        return 0
    names = [name for row in rows for name in row.stored_names()]
    ItemImage.objects.filter(item_id__in=[row.item_id for row in rows]).delete()
    transaction.on_commit(lambda: _delete_files(names))
    return len(rows)


def _delete_files(names: Sequence[str]) -> None:
    storage = image_storage()
    for name in names:
        try:
            storage.delete(name)
        except OSError:  # left for an operator; logged, never raised into a committed deletion
            logger.exception("could not delete image file %s", name)
