"""Masking cost: one queue/next's masking of a 1M-character item, with 1 and with 20 patterns.

What a masked project's queue/next does to the item it hands out (labeling/services/privacy.py ``mask_item``:
external id, text and every meta key and string), timed and with its peak Python memory (tracemalloc), on the
worst text the import accepts: SIFT_MAX_TEXT_CHARS characters (1M by default), non-ASCII, where the patterns
match almost everything. Issue 16 measured the unbounded masker at 17 s and 211 MB for one pattern and about
278 s for 20; the bound is ``MAX_MASK_MATCHES`` matches per rule and text (the rest is withheld, never shown
unmasked), with matching over UTF-8 bytes. No database is needed.

    python bench/masking.py [--chars 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(masker: Any, item: dict[str, Any], repeat: int) -> tuple[float, float, int]:
    from labeling.services.privacy import mask_item

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        shown = mask_item(masker, item)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    mask_item(masker, item)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 1e6, len(shown["text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SIFT_DEBUG", "1")
    import django

    django.setup()
    from labeling.services.privacy import DETECTORS, MAX_MASK_MATCHES, Masker, _compiled

    text = ("héllo wörld ünïcode a@b.com +44 20 7946 0958 www.example.org " * (args.chars // 60 + 1))[:args.chars]
    item = {"id": 1, "external_id": "sender a@b.com", "text": text,
            "meta": {"from": "a@b.com", "c@d.org": ["reply", {"to": "e@f.net"}]}}
    one = Masker(_compiled((), (("letter", r"\pL"),)))
    twenty = Masker(_compiled(tuple(DETECTORS), tuple((f"p{n}", rf"\pL{{{n % 4 + 1}}}") for n in range(17))))
    print(f"masking one queue/next item of {args.chars:,} characters; bound: {MAX_MASK_MATCHES:,} matches per rule")
    figures = {}
    for name, masker in (("1 pattern", one), ("20 patterns", twenty)):
        seconds, peak_mb, shown = measure(masker, item, args.repeat)
        figures[name] = seconds
        print(f"  {name:<12} {seconds * 1000:8.1f} ms  peak {peak_mb:6.1f} MB  ({shown:,} characters shown)")
    print(f"  20 / 1 patterns: {figures['20 patterns'] / figures['1 pattern']:.1f}x")


if __name__ == "__main__":
    main()
