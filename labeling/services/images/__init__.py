"""Image items: safe to store (decode, re-encode, strip, cap) and to serve.

- ``decode``: untrusted bytes -> display and thumbnail re-encodings, or a refusal saying why (plain Pillow).
- ``archive``: a zip upload read without trusting it (zip-slip, zip bombs, one data file).
- ``store``: the derived files in Django's ``images`` storage and their ``ItemImage`` rows; purge on deletion.
- ``zip_import``: a zip of images beside a JSON Lines file -> ``items_import`` plus attached images.
- ``serve``: the project-scoped read of one item's derived file, for the image view.

Callers import from the package.
"""

from __future__ import annotations

from labeling.services.images.archive import upload_is_zip
from labeling.services.images.decode import ImageRefused, image_derive
from labeling.services.images.serve import ImageFile, item_image_block, item_image_open
from labeling.services.images.store import image_storage, item_image_attach, item_images_purge
from labeling.services.images.zip_import import items_import_zip

__all__ = [
    "ImageFile", "ImageRefused", "image_derive", "image_storage", "item_image_attach", "item_image_block",
    "item_image_open", "item_images_purge", "items_import_zip", "upload_is_zip",
]
