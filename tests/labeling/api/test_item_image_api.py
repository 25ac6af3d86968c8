"""GET /api/projects/{slug}/items/{id}/image/{variant}, and the image block of queue/next."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from labeling.models import Item, ItemImage
from tests import image_samples as samples

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def image_root(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "images"
    settings.STORAGES = {**settings.STORAGES, "images": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}}}
    return root


def import_zip(client: Any, rows: list[dict[str, Any]], files: dict[str, bytes]) -> Any:
    upload = SimpleUploadedFile("batch.zip", samples.zip_upload(rows, files), content_type="application/zip")
    return client.post("/api/projects/sms/items/import", {"file": upload}, format="multipart")


def test_a_zip_upload_imports_items_with_images(cast: dict[str, Any], api_as: Any) -> None:
    response = import_zip(api_as(cast["users"]["policy_lead"]),
                          [{"external_id": "cat", "text": "a cat", "image": "cat.jpg"},
                           {"external_id": "svg", "text": "x", "image": "x.svg"}],
                          {"cat.jpg": samples.photo(), "x.svg": samples.SVG_WITH_SCRIPT})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body.pop("languages")) == {"counts", "undetermined", "recommended_embedder"}  # as for any import
    assert body == {"created": 1, "updated": 0, "unchanged": 0, "errors": [
        {"line": 2, "error": "image: SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or "
                             "WebP"}]}


@pytest.mark.parametrize("variant", ["display", "thumb"])
def test_the_image_is_served_with_safe_headers_to_members(cast: dict[str, Any], api_as: Any, variant: str) -> None:
    import_zip(api_as(cast["users"]["admin"]), [{"external_id": "cat", "text": "a cat", "image": "cat.jpg"}],
               {"cat.jpg": samples.photo(2000, 1000)})
    item = Item.objects.get(external_id="cat")
    response = api_as(cast["users"]["reviewer"]).get(f"/api/projects/sms/items/{item.pk}/image/{variant}",
                                                     HTTP_ACCEPT="image/avif,image/webp,*/*")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Content-Disposition"] == f'inline; filename="item-{item.pk}-{variant}.webp"'
    body = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(body)
    assert Image.open(io.BytesIO(body)).size == ((1600, 800) if variant == "display" else (256, 128))


def test_non_members_get_404_and_unknown_variants_too(cast: dict[str, Any], api_as: Any) -> None:
    import_zip(api_as(cast["users"]["admin"]), [{"external_id": "cat", "text": "a cat", "image": "cat.jpg"}],
               {"cat.jpg": samples.photo()})
    item = Item.objects.get(external_id="cat")
    url = f"/api/projects/sms/items/{item.pk}/image/"
    assert api_as(cast["users"]["outsider"]).get(url + "display").status_code == 404
    assert api_as(None).get(url + "display").status_code == 401
    admin = api_as(cast["users"]["admin"])
    assert admin.get(url + "original").status_code == 404
    other = Item.objects.create(project=cast["other_project"], external_id="o", text="o", content_hash="0" * 64)
    assert admin.get(f"/api/projects/sms/items/{other.pk}/image/display").status_code == 404


def test_queue_next_carries_the_image_urls(cast: dict[str, Any], api_as: Any) -> None:
    import_zip(api_as(cast["users"]["admin"]), [{"external_id": "cat", "image": "cat.png"}],
               {"cat.png": samples.photo(300, 200, fmt="PNG")})
    item = Item.objects.get(external_id="cat")
    body = api_as(cast["users"]["reviewer"]).post("/api/projects/sms/queue/next").json()
    base = f"/api/projects/sms/items/{item.pk}/image/"
    assert body["item"]["text"] == "[image: cat.png]"
    assert body["item"]["image"] == {"display": base + "display", "thumb": base + "thumb", "width": 300,
                                     "height": 200, "display_width": 300, "display_height": 200, "name": "cat.png"}
    assert ItemImage.objects.count() == 1


def test_a_text_item_has_a_null_image(cast: dict[str, Any], api_as: Any) -> None:
    Item.objects.create(project=cast["project"], external_id="t", text="just text", content_hash="1" * 64)
    body = api_as(cast["users"]["reviewer"]).post("/api/projects/sms/queue/next").json()
    assert body["item"]["image"] is None
