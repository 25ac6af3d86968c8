"""Serving an item's derived image: ``ItemImageView``.

Thin: authorise the project (``Project.objects.get_for``: a non-member gets 404, as for an unknown project) and
read the file through labeling/services/images/serve.py. The answer is made so a browser can only ever show it
as a picture: the stored Content-Type (always image/webp or image/png: a re-encoding, never an upload),
``X-Content-Type-Options: nosniff``, a CSP that forbids everything and sandboxes the document should anyone open
it directly, ``Content-Disposition: inline`` with a name we make up, and private caching (the URL is per item,
and its bytes change only with a new image, which also gets a new storage name).
"""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from labeling.models import Capability, Project
from labeling.services.images import item_image_open

IMAGE_CSP = "default-src 'none'; sandbox"


class _AnyAccept(BaseContentNegotiation):
    """An <img> asks for image/*; the answer is the file, and errors are JSON whatever was asked."""

    def select_parser(self, request: Any, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class ItemImageView(APIView):
    content_negotiation_class = _AnyAccept

    @extend_schema(
        operation_id="item_image",
        tags=["items"],
        summary="An item's image (a re-encoding: display size or thumbnail)",
        description=(
            "The re-encoded image of an image item: `display` (at most 1600 px a side) or `thumb` (256 px), as "
            "`image/webp` (or `image/png`). Served with `X-Content-Type-Options: nosniff`, "
            "`Content-Security-Policy: default-src 'none'; sandbox` and `Content-Disposition: inline`. Any member of "
            "the project may read it (the `view` capability); anyone else gets 404. The queue's item carries the "
            "URLs as `item.image.display` and `item.image.thumb`."
        ),
        parameters=[OpenApiParameter("variant", OpenApiTypes.STR, OpenApiParameter.PATH, enum=["display", "thumb"])],
        responses={
            (200, "image/webp"): OpenApiResponse(OpenApiTypes.BINARY, description="The image."),
            404: OpenApiResponse(description="No such project among yours, no such item, or it has no image."),
        },
    )
    def get(self, request: Request, slug: str, item_id: int, variant: str) -> FileResponse:
        project: Project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        image = item_image_open(project=project, item_id=item_id, variant=variant)
        response = FileResponse(image.handle, content_type=image.content_type)
        response["Content-Length"] = str(image.size)
        response["Content-Disposition"] = f'inline; filename="{image.filename}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = IMAGE_CSP
        response["Cache-Control"] = "private, max-age=3600"
        response["Cross-Origin-Resource-Policy"] = "same-origin"
        return response
