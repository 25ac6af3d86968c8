"""Turning untrusted image bytes into images safe to store and show: ``image_derive``. Plain Pillow, no Django.

The rule: **nothing a user sent is ever stored or served as sent.** Every image is decoded to pixels and the
pixels are encoded afresh (WebP, or PNG where this Pillow has no WebP), as a display size and a thumbnail. What
that buys, and what would break without each step:

* **Only raster formats we name are decoded** (``ACCEPTED_FORMATS``: PNG, JPEG, GIF, WebP, BMP). Pillow is asked
  to try those decoders alone, so a TIFF, an EPS (Ghostscript!), a PSD or anything else is "not an image we
  accept". SVG is sniffed and named in its own error: it is XML that can carry script, and a browser showing it
  from our origin would run it (Label Studio's CVE-2023-47116 class).
* **Decompression bombs are refused before pixels are allocated.** ``Image.MAX_IMAGE_PIXELS`` is set explicitly
  (``PIXEL_LIMIT`` at import, from settings through ``configure``) and Pillow's ``DecompressionBombWarning``
  (1x to 2x the limit) is made an error inside ``image_derive``, so any image over the limit is refused; the
  header's declared size is also checked before ``load()``. The byte cap (``max_bytes``) is the caller's: it
  reads at most that many bytes plus one.
* **Metadata goes.** The fresh image is built from raw pixels (``Image.frombytes``), so EXIF (GPS included), XMP,
  ICC profiles, comments and text chunks cannot ride along; the EXIF orientation is applied first, so the picture
  still stands the right way up.
* **Polyglots lose their payload.** A GIF that is also JavaScript, or a JPEG with a zip appended, decodes as an
  image; the re-encoded file holds only what the encoder wrote (``trailing_bytes`` checks a RIFF/PNG file ends
  where its container says it ends).
* **Animations keep their first frame.** Frames beyond it are never decoded, so a 10,000-frame GIF costs one.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError, features

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
DISPLAY_MAX_SIDE = 1600
THUMB_MAX_SIDE = 256
WEBP_QUALITY = 85
PIXEL_LIMIT = 40_000_000

# Set explicitly, never left to Pillow's default: the project's limit, also enforced by our own header check.
Image.MAX_IMAGE_PIXELS = PIXEL_LIMIT

ENCODING = ("WEBP", "image/webp", "webp") if features.check("webp") else ("PNG", "image/png", "png")
"""The stored format, its Content-Type and file extension."""


class ImageRefused(ValueError):
    """The bytes are not an image we store; the message says why, for the import's per-line error."""


@dataclass(frozen=True)
class DerivedImage:
    display: bytes
    thumb: bytes
    width: int
    height: int
    display_width: int
    display_height: int
    source_format: str
    source_sha256: str
    content_type: str = ENCODING[1]
    extension: str = ENCODING[2]


def configure(*, max_pixels: int) -> None:
    """Apply the deployment's pixel limit (settings.SIFT_MAX_IMAGE_PIXELS) to Pillow and to our own check."""
    global PIXEL_LIMIT
    PIXEL_LIMIT = max_pixels
    Image.MAX_IMAGE_PIXELS = max_pixels


def looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head


def image_derive(data: bytes, *, max_bytes: int) -> DerivedImage:
    """The display-size and thumbnail re-encodings of ``data``, or ``ImageRefused`` saying why not."""
    if len(data) > max_bytes:
        raise ImageRefused(f"{len(data):,} bytes; the limit is {max_bytes:,}")
    if not data:
        raise ImageRefused("the file is empty")
    if looks_like_svg(data):
        raise ImageRefused("SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or WebP")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as opened:
                source_format = opened.format or "?"
                width, height = opened.size
                if width < 1 or height < 1:
                    raise ImageRefused("the image has no pixels")
                if width * height > PIXEL_LIMIT:
                    raise ImageRefused(f"{width:,}x{height:,} pixels; the limit is {PIXEL_LIMIT:,} pixels")
                opened.seek(0)  # the first frame of an animation, and only it
                opened.load()
                upright = ImageOps.exif_transpose(opened)
                pixels = _plain_pixels(upright)
        except ImageRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused(
                f"too many pixels (a decompression bomb?); the limit is {PIXEL_LIMIT:,} pixels") from None
        except UnidentifiedImageError:
            raise ImageRefused("not a PNG, JPEG, GIF, WebP or BMP image") from None
        except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
            raise ImageRefused(f"the image does not decode: {type(exc).__name__}: {str(exc)[:120]}") from None
    display = _resized(pixels, DISPLAY_MAX_SIDE)
    return DerivedImage(
        display=_encode(display), thumb=_encode(_resized(pixels, THUMB_MAX_SIDE)),
        width=pixels.width, height=pixels.height, display_width=display.width, display_height=display.height,
        source_format=source_format, source_sha256=hashlib.sha256(data).hexdigest(),
    )


def _plain_pixels(image: Image.Image) -> Image.Image:
    """A fresh RGB or RGBA image holding ``image``'s pixels and nothing else (no info, EXIF, ICC or palette)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    converted = image.convert("RGBA" if has_alpha else "RGB")
    return Image.frombytes(converted.mode, converted.size, converted.tobytes())


def _resized(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    copy = image.copy()
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return copy


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    if ENCODING[0] == "WEBP":
        image.save(out, format="WEBP", quality=WEBP_QUALITY, method=4)
    else:
        image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def trailing_bytes(encoded: bytes) -> int:
    """How many bytes follow the end of the container in ``encoded`` (a WebP's RIFF size, a PNG's IEND chunk):
    0 for what ``image_derive`` writes. Tests use it to prove a polyglot's payload did not survive."""
    if encoded[:4] == b"RIFF" and encoded[8:12] == b"WEBP":
        size = int.from_bytes(encoded[4:8], "little")
        return len(encoded) - (8 + size + (size & 1))
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        end = encoded.rfind(b"IEND")
        if end < 0:
            raise ValueError("a PNG without IEND")
        return len(encoded) - (end + 8)
    raise ValueError("neither WebP nor PNG")
