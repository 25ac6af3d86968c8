"""Reading one item's derived image for the image view, and the URLs the queue hands the page:
``item_image_open``, ``item_image_urls``.

The caller has already authorised the project (``Project.objects.get_for``); the look-up is scoped to it, so an
item id from another project is a 404 like an unknown one. Only the re-encodings are ever served (``VARIANTS``);
an original kept by the project is not, since it is the bytes a user sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from django.urls import reverse

from labeling.models import ItemImage, Project
from labeling.services.errors import NotFound
from labeling.services.images.store import image_storage

VARIANTS = ("display", "thumb")


@dataclass(frozen=True)
class ImageFile:
    handle: IO[bytes]
    content_type: str
    filename: str
    size: int


def item_image_open(*, project: Project, item_id: int, variant: str) -> ImageFile:
    """The open derived file ``variant`` of ``item_id``'s image in ``project``; NotFound otherwise."""
    if variant not in VARIANTS:
        raise NotFound(f"no image variant {variant!r}; use one of {', '.join(VARIANTS)}")
    image = ItemImage.objects.filter(project=project, item_id=item_id).first()
    if image is None:
        raise NotFound("this item has no image")
    name = image.display_name if variant == "display" else image.thumb_name
    storage = image_storage()
    try:
        handle = storage.open(name, "rb")
    except (FileNotFoundError, OSError):
        raise NotFound("the image file is missing") from None
    extension = name.rsplit(".", 1)[-1]
    return ImageFile(handle=handle, content_type=image.content_type, size=storage.size(name),
                     filename=f"item-{item_id}-{variant}.{extension}")


def item_image_block(*, project: Project, item_id: int) -> dict[str, Any] | None:
    """The ``image`` block of an item in the queue's answer (None for a text-only item): one primary-key read."""
    image = ItemImage.objects.filter(item_id=item_id, project=project).first()
    if image is None:
        return None

    def url(variant: str) -> str:
        return reverse("api-item-image", kwargs={"slug": project.slug, "item_id": item_id, "variant": variant})

    return {"display": url("display"), "thumb": url("thumb"), "width": image.width, "height": image.height,
            "display_width": image.display_width, "display_height": image.display_height,
            "name": image.source_name}
