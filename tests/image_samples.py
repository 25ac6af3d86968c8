"""Image files for the image tests, built in memory: ordinary photos with GPS EXIF, SVG with script, polyglots,
decompression bombs, oversized files, and zip uploads holding a JSON Lines file beside them."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from typing import Any

from PIL import Image

PAYLOAD = b"alert(document.domain)//SIFT-POLYGLOT-PAYLOAD"


def photo(width: int = 640, height: int = 480, *, fmt: str = "JPEG", gps: bool = True, color: tuple[int, int, int]
          = (200, 40, 40)) -> bytes:
    """A picture with a gradient, and (for JPEG) EXIF carrying a GPS position and a camera comment."""
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            image.putpixel((x, y), ((x * 3) % 256, (y * 5) % 256, 90))
    out = io.BytesIO()
    if fmt == "JPEG" and gps:
        exif = Image.Exif()
        exif[0x010F] = "SecretCam"  # Make
        gps_ifd = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}
        exif[0x8825] = gps_ifd
        image.save(out, format="JPEG", exif=exif.tobytes(), quality=90)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


SVG_WITH_SCRIPT = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                   b'<script>alert(document.cookie)</script><rect width="10" height="10"/></svg>')


def gif_js_polyglot() -> bytes:
    """A GIF that is also JavaScript: the header's width bytes open a comment, and the script follows the trailer."""
    out = io.BytesIO()
    Image.new("P", (4, 4), 1).save(out, format="GIF")
    gif = bytearray(out.getvalue())
    gif[6:8] = b"/*"  # width 10799: `GIF89a/*` starts a JS comment
    return bytes(gif) + b"*/=1;" + PAYLOAD


def jpeg_zip_polyglot() -> bytes:
    """A JPEG with a zip archive appended (opens as either)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.js", PAYLOAD)
    return photo(64, 64, gps=False) + archive.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A valid PNG declaring side x side pixels (400 megapixels), a few hundred KB compressed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def big_file(size: int = 100 * 1024 * 1024) -> bytes:
    """A real JPEG padded to ``size`` bytes with trailing data (a 100 MB "image")."""
    head = photo(32, 32, gps=False)
    return head + b"\x00" * (size - len(head))


def zip_upload(rows: list[dict[str, Any]], files: dict[str, bytes], *, data_name: str = "items.jsonl",
               compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        zf.writestr(data_name, "".join(json.dumps(row) + "\n" for row in rows))
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()
