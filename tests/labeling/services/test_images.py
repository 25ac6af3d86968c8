"""Image items (labeling/services/images/): decoding and re-encoding, the zip import, storage and hard deletion."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import storages
from PIL import Image

from labeling.models import Item, ItemImage
from labeling.services.images import ImageRefused, image_derive, items_import_zip
from labeling.services.images.decode import THUMB_MAX_SIDE, trailing_bytes
from labeling.services.privacy import items_delete
from tests import image_samples as samples

pytestmark = pytest.mark.django_db

MAX = 20 * 1024 * 1024


@pytest.fixture(autouse=True)
def image_root(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "images"
    settings.STORAGES = {**settings.STORAGES, "images": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}}}
    return root


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def run(cast: dict[str, Any], rows: list[dict[str, Any]], files: dict[str, bytes], **kwargs: Any) -> dict[str, Any]:
    upload = io.BytesIO(samples.zip_upload(rows, files))
    return items_import_zip(actor=cast["users"]["admin"], project=cast["project"], source=upload, **kwargs).as_dict()


# --- decoding --------------------------------------------------------------------------------------------------

def test_a_photo_is_re_encoded_without_its_exif_or_gps() -> None:
    original = samples.photo(2000, 1000)
    assert Image.open(io.BytesIO(original)).getexif().get(0x8825) is not None  # the sample does carry GPS
    derived = image_derive(original, max_bytes=MAX)
    assert (derived.width, derived.height, derived.display_width, derived.display_height) == (2000, 1000, 1600, 800)
    for encoded, size in ((derived.display, (1600, 800)), (derived.thumb, (THUMB_MAX_SIDE, 128))):
        image = Image.open(io.BytesIO(encoded))
        assert (image.format, image.size) == ("WEBP", size)
        assert dict(image.getexif()) == {}
        assert "exif" not in image.info and "icc_profile" not in image.info and "xmp" not in image.info
        assert b"SecretCam" not in encoded
        assert trailing_bytes(encoded) == 0


def test_exif_orientation_is_applied_before_it_is_dropped() -> None:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 0, 255)).save(out, format="JPEG", exif=exif.tobytes())
    derived = image_derive(out.getvalue(), max_bytes=MAX)
    assert (derived.width, derived.height) == (20, 40)


@pytest.mark.parametrize(("data", "message"), [
    (samples.SVG_WITH_SCRIPT, "SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or WebP"),
    (b"<svg onload=alert(1)>", "SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or WebP"),
    (b"%PDF-1.4 not an image", "not a PNG, JPEG, GIF, WebP or BMP image"),
    (b"", "the file is empty"),
])
def test_what_is_not_a_raster_image_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageRefused) as refused:
        image_derive(data, max_bytes=MAX)
    assert str(refused.value) == message


def test_a_tiff_is_refused_even_though_pillow_could_read_it() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="TIFF")
    with pytest.raises(ImageRefused, match=r"^not a PNG, JPEG, GIF, WebP or BMP image$"):
        image_derive(out.getvalue(), max_bytes=MAX)


BOMB = "too many pixels (a decompression bomb?); the limit is 40,000,000 pixels"


@pytest.mark.parametrize("side", [20_000, 7_000])  # 10x the limit (Pillow's error), 1.2x (its warning, made an error)
def test_a_decompression_bomb_is_refused_before_its_pixels_are_allocated(side: int) -> None:
    import tracemalloc

    data = samples.png_bomb(side)
    tracemalloc.start()
    with pytest.raises(ImageRefused) as refused:
        image_derive(data, max_bytes=MAX)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(refused.value) == BOMB
    assert peak < 10 * 1024 * 1024  # the pixels (side * side / 8 bytes at the very least) were never allocated


def test_over_the_byte_cap_is_refused() -> None:
    with pytest.raises(ImageRefused, match=r"^1,001 bytes; the limit is 1,000$"):
        image_derive(b"\xff" * 1001, max_bytes=1000)


@pytest.mark.parametrize("make", [samples.gif_js_polyglot, samples.jpeg_zip_polyglot])
def test_a_polyglot_is_re_encoded_and_its_payload_is_gone(make: Any) -> None:
    data = make()
    assert samples.PAYLOAD in data
    derived = image_derive(data, max_bytes=MAX)
    for encoded in (derived.display, derived.thumb):
        assert samples.PAYLOAD not in encoded and b"PK\x03\x04" not in encoded
        assert trailing_bytes(encoded) == 0
        Image.open(io.BytesIO(encoded)).load()  # decodes


def test_an_animated_gif_keeps_its_first_frame() -> None:
    out = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    derived = image_derive(out.getvalue(), max_bytes=MAX)
    first = Image.open(io.BytesIO(derived.display)).convert("RGB").getpixel((8, 8))
    assert isinstance(first, tuple) and first[0] > 200 and first[1] < 50


# --- the zip import ----------------------------------------------------------------------------------------------

def test_zip_import_attaches_re_encoded_images_and_refuses_bad_ones_by_line(cast: dict[str, Any],
                                                                           image_root: Path) -> None:
    rows = [
        {"external_id": "cat", "text": "a cat", "image": "img/cat.jpg"},
        {"external_id": "svg", "text": "x", "image": "img/evil.svg"},
        {"external_id": "only", "image": "img/dog.png"},
        {"external_id": "slip", "text": "x", "image": "../../etc/passwd"},
        {"external_id": "bomb", "text": "x", "image": "bomb.png"},
        {"external_id": "gone", "text": "x", "image": "img/missing.png"},
        {"external_id": "plain", "text": "no image here"},
        {"external_id": "", "text": "bad row", "image": "img/cat.jpg"},
    ]
    files = {"img/cat.jpg": samples.photo(), "img/evil.svg": samples.SVG_WITH_SCRIPT,
             "img/dog.png": samples.photo(300, 200, fmt="PNG"), "bomb.png": samples.png_bomb(),
             "../../etc/passwd": b"root:x:0:0"}
    summary = run(cast, rows, files)
    assert summary == {"created": 3, "updated": 0, "unchanged": 0, "errors": [
        {"line": 2, "error": "image: SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or "
                             "WebP"},
        {"line": 4, "error": "image: '../../etc/passwd' is not a safe path inside the archive (no '..', absolute "
                             "paths, backslashes or drive letters)"},
        {"line": 5, "error": f"image: {BOMB}"},
        {"line": 6, "error": "image: 'img/missing.png': no such file in the archive"},
        {"line": 8, "error": "external_id: required"},
    ]}
    items = {item.external_id: item for item in Item.objects.filter(project=cast["project"])}
    assert sorted(items) == ["cat", "only", "plain"]
    assert items["only"].text == "[image: dog.png]"
    images = {row.item.external_id: row for row in ItemImage.objects.select_related("item")}
    assert sorted(images) == ["cat", "only"]
    cat = images["cat"]
    assert (cat.width, cat.height, cat.source_format, cat.source_name, cat.original_name) == (
        640, 480, "JPEG", "cat.jpg", "")
    assert stored_files(image_root) == sorted(
        name for row in images.values() for name in (row.display_name, row.thumb_name))
    assert not (image_root.parent / "etc").exists()


def test_reimporting_the_same_zip_changes_nothing_and_a_new_image_replaces_the_files(
        cast: dict[str, Any], image_root: Path, django_capture_on_commit_callbacks: Any) -> None:
    rows = [{"external_id": "cat", "text": "a cat", "image": "cat.jpg"}]
    run(cast, rows, {"cat.jpg": samples.photo()})
    before = stored_files(image_root)
    assert run(cast, rows, {"cat.jpg": samples.photo()}) == {"created": 0, "updated": 0, "unchanged": 1,
                                                              "errors": []}
    assert stored_files(image_root) == before
    with django_capture_on_commit_callbacks(execute=True):  # the old files go once the new row has committed
        run(cast, rows, {"cat.jpg": samples.photo(color=(0, 90, 0))})
    after = stored_files(image_root)
    assert len(after) == 2 and set(after).isdisjoint(before)
    image = ItemImage.objects.get()
    assert sorted([image.display_name, image.thumb_name]) == after


def test_atomic_with_a_refused_image_imports_nothing(cast: dict[str, Any], image_root: Path) -> None:
    rows = [{"external_id": "a", "text": "a", "image": "a.jpg"}, {"external_id": "b", "text": "b", "image": "b.svg"}]
    summary = run(cast, rows, {"a.jpg": samples.photo(), "b.svg": samples.SVG_WITH_SCRIPT}, atomic=True)
    assert summary["created"] == 0 and [e["line"] for e in summary["errors"]] == [2]
    assert not Item.objects.exists() and not ItemImage.objects.exists() and stored_files(image_root) == []


def test_originals_are_kept_only_when_the_project_says_so(cast: dict[str, Any], image_root: Path) -> None:
    project = cast["project"]
    project.keep_image_originals = True
    project.save(update_fields=["keep_image_originals"])
    original = samples.photo()
    run(cast, [{"external_id": "cat", "text": "a cat", "image": "cat.jpg"}], {"cat.jpg": original})
    image = ItemImage.objects.get()
    assert image.original_name.endswith("-original.jpg")
    assert (image_root / image.original_name).read_bytes() == original


def test_hard_deletion_removes_every_derived_file(cast: dict[str, Any], image_root: Path,
                                                  django_capture_on_commit_callbacks: Any) -> None:
    project = cast["project"]
    project.keep_image_originals = True
    project.save(update_fields=["keep_image_originals"])
    run(cast, [{"external_id": "cat", "text": "a", "image": "c.jpg"}, {"external_id": "dog", "text": "b",
                                                                     "image": "d.png"}],
        {"c.jpg": samples.photo(), "d.png": samples.photo(fmt="PNG")})
    assert len(stored_files(image_root)) == 6
    dog = ItemImage.objects.get(item__external_id="dog")
    with django_capture_on_commit_callbacks(execute=True):
        items_delete(actor=cast["users"]["admin"], project=project, external_ids=["cat"], reason="user request")
    assert list(ItemImage.objects.values_list("item__external_id", flat=True)) == ["dog"]
    assert stored_files(image_root) == sorted(dog.stored_names())


def test_an_image_field_outside_a_zip_is_a_line_error(cast: dict[str, Any]) -> None:
    from labeling.services.items_import import items_import

    body = json.dumps({"external_id": "a", "text": "t", "image": "x.png"}).encode() + b"\n"
    summary = items_import(actor=cast["users"]["admin"], project=cast["project"], source=io.BytesIO(body),
                           filename="x.jsonl")
    assert summary.as_dict()["errors"] == [
        {"line": 1, "error": "image: images are imported in a .zip beside the JSON Lines file"}]
    assert not Item.objects.exists()


def test_the_default_storage_is_a_local_folder() -> None:
    assert type(storages["images"]).__name__ == "FileSystemStorage"


def test_the_import_items_command_takes_a_zip(cast: dict[str, Any], tmp_path: Path) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    path = tmp_path / "batch.zip"
    path.write_bytes(samples.zip_upload([{"external_id": "cat", "image": "cat.jpg"},
                                         {"external_id": "svg", "image": "x.svg"}],
                                        {"cat.jpg": samples.photo(), "x.svg": samples.SVG_WITH_SCRIPT}))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"^1 row\(s\) had errors; the valid rows were imported$"):
        call_command("import_items", "--project", "sms", str(path), stdout=out)
    assert json.loads(out.getvalue())["created"] == 1
    assert list(ItemImage.objects.values_list("item__external_id", flat=True)) == ["cat"]
