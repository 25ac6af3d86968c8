"""Image items: how fast untrusted images are decoded and re-encoded (labeling/services/images/decode.py), and how
cheaply hostile ones are refused. No database: this is the CPU the import spends per image, on top of the text
import measured by bench/import_items.py.

    flock /tmp/sift-bench.lock python bench/images.py [--n 40]

Prints, per photo size (JPEG with EXIF, as a phone sends it): images re-encoded per second and the stored bytes
(display WebP + thumbnail) against the bytes sent; then refusals per second for a decompression bomb (a 400 MP
PNG), an SVG and a 100 MB file. Photos are synthetic (a textured gradient): scikit-image's sample photos are not
installed on this box.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SIFT_DEBUG", "1")  # settings only: nothing here touches a database

import django

django.setup()

from labeling.services.images.decode import ImageRefused, image_derive  # noqa: E402
from tests import image_samples as samples  # noqa: E402

MAX = 20 * 1024 * 1024


def textured(width: int, height: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8"), "RGB")
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88, exif=exif.tobytes())
    return out.getvalue()


def rate(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2-core box shared with other jobs)")
    for width, height in ((640, 480), (1920, 1080), (4000, 3000)):
        data = textured(width, height)
        derived = image_derive(data, max_bytes=MAX)
        per_second = rate(lambda data=data: image_derive(data, max_bytes=MAX), args.n)
        print(f"{width}x{height} JPEG ({len(data) / 1024:,.0f} KiB sent): {per_second:,.1f} images/s re-encoded; "
              f"stored {(len(derived.display) + len(derived.thumb)) / 1024:,.0f} KiB (display "
              f"{derived.display_width}x{derived.display_height} + thumbnail)")
    for name, data in (("400 MP PNG bomb", samples.png_bomb()), ("SVG with script", samples.SVG_WITH_SCRIPT),
                       ("100 MB file", samples.big_file())):
        def refuse(data: bytes = data) -> None:
            try:
                image_derive(data, max_bytes=MAX)
            except ImageRefused:
                return
            raise AssertionError("not refused")
        print(f"{name}: refused {rate(refuse, args.n):,.0f}/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
