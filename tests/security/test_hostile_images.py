"""Hostile image uploads through the HTTP import: each refused by line with a clear error, nothing stored that
should not be, nothing written outside the storage, and the server still answering afterwards."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.models import Item, ItemImage
from tests import image_samples as samples

pytestmark = pytest.mark.django_db

URL = "/api/projects/sms/items/import"


@pytest.fixture(autouse=True)
def image_root(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "store" / "images"
    settings.STORAGES = {**settings.STORAGES, "images": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}}}
    return root


def post_zip(client: Any, data: bytes) -> Any:
    return client.post(URL, {"file": SimpleUploadedFile("h.zip", data, content_type="application/zip")},
                       format="multipart")


def test_every_hostile_image_is_refused_by_line_and_the_good_one_lands(cast: dict[str, Any], api_as: Any,
                                                                       image_root: Path) -> None:
    rows = [
        {"external_id": "svg", "text": "t", "image": "svg.svg"},
        {"external_id": "svg-as-png", "text": "t", "image": "svg.png"},
        {"external_id": "bomb", "text": "t", "image": "bomb.png"},
        {"external_id": "huge", "text": "t", "image": "huge.jpg"},
        {"external_id": "slip", "text": "t", "image": "../../../tmp/slip.png"},
        {"external_id": "abs", "text": "t", "image": "/etc/passwd"},
        {"external_id": "win", "text": "t", "image": "..\\..\\x.png"},
        {"external_id": "gifjs", "text": "t", "image": "poly.gif"},
        {"external_id": "jpgzip", "text": "t", "image": "poly.jpg"},
    ]
    files = {"svg.svg": samples.SVG_WITH_SCRIPT, "svg.png": samples.SVG_WITH_SCRIPT,
             "bomb.png": samples.png_bomb(), "huge.jpg": samples.big_file(),
             "../../../tmp/slip.png": samples.photo(fmt="PNG"),
             "poly.gif": samples.gif_js_polyglot(), "poly.jpg": samples.jpeg_zip_polyglot()}
    client = api_as(cast["users"]["admin"])
    response = post_zip(client, samples.zip_upload(rows, files))
    assert response.status_code == 200, response.content
    svg = "image: SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or WebP"
    unsafe = "is not a safe path inside the archive (no '..', absolute paths, backslashes or drive letters)"
    body = response.json()
    body.pop("languages")
    assert body == {"created": 2, "updated": 0, "unchanged": 0, "errors": [
        {"line": 1, "error": svg},
        {"line": 2, "error": svg},
        {"line": 3, "error": "image: too many pixels (a decompression bomb?); the limit is 40,000,000 pixels"},
        {"line": 4, "error": "image: 'huge.jpg': 104,857,600 bytes; the limit is 20,971,520"},
        {"line": 5, "error": f"image: '../../../tmp/slip.png' {unsafe}"},
        {"line": 6, "error": f"image: '/etc/passwd' {unsafe}"},
        {"line": 7, "error": f"image: '..\\\\..\\\\x.png' {unsafe}"},
    ]}
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["gifjs", "jpgzip"]
    stored = [p for p in image_root.rglob("*") if p.is_file()]
    assert len(stored) == 4 and ItemImage.objects.count() == 2
    for path in stored:
        data = path.read_bytes()
        assert data[:4] == b"RIFF" and samples.PAYLOAD not in data and b"<svg" not in data
    assert not (image_root.parent.parent / "tmp").exists() and not Path("/tmp/slip.png").exists()
    # The server is up and serves the next request.
    assert client.get("/api/projects/sms/").status_code == 200


def test_a_zip_bomb_archive_is_refused_whole(cast: dict[str, Any], api_as: Any, settings: Any) -> None:
    settings.SIFT_MAX_ZIP_INFLATED_BYTES = 50 * 1024 * 1024
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("items.jsonl", '{"external_id": "a", "text": "t", "image": "z.png"}\n')
        zf.writestr("z.png", b"\x00" * (60 * 1024 * 1024))
    assert len(out.getvalue()) < 200_000
    response = post_zip(api_as(cast["users"]["admin"]), out.getvalue())
    assert response.status_code == 400
    assert response.json()["detail"].startswith("file: the archive inflates to 62,914,6")
    assert not Item.objects.exists()


@pytest.mark.parametrize(("names", "found"), [([], "none"), (["a.jsonl", "b.jsonl"], "a.jsonl, b.jsonl")])
def test_a_zip_without_exactly_one_data_file_is_refused(cast: dict[str, Any], api_as: Any, names: list[str],
                                                        found: str) -> None:
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("x.png", samples.photo(fmt="PNG"))
        for name in names:
            zf.writestr(name, "")
    response = post_zip(api_as(cast["users"]["admin"]), out.getvalue())
    assert response.status_code == 400
    assert response.json()["detail"] == ("file: a zip upload must hold exactly one JSON Lines file (.jsonl or "
                                         f".ndjson) beside its images; found {found}")
