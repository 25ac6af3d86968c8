"""Build bench/data/chatterbot_topics.jsonl.gz, the multilingual labelled set of bench/embedders.py.

``.venv/bin/python bench/multilingual_set.py [--corpus DIR]``

Source: the conversation files of the PyPI package ``chatterbot-corpus`` 1.3.3 (BSD-3-Clause; "A machine readable
multilingual dialog corpus"), ``chatterbot_corpus/data/<language>/<topic>.yml``. Many of its non-English files are
translations of the English ones, topic by topic, which is what a cross-lingual test needs: the same task in
another language. One row per conversation (its turns joined by newlines), labelled with its file's topic, for the
ten topics present in English and in at least one other language under the same meaning (``TOPIC_ALIASES`` maps
the Spanish and Dutch file names), and the nine languages that have at least four of them.

The output is committed (about 70 kB), so the benchmark needs neither the package nor a network. To rebuild it:
``pip download --no-deps chatterbot-corpus==1.3.3``, unzip the wheel, and pass the unzipped folder as ``--corpus``
(default: the installed package, if any). The build is deterministic (files and conversations in order).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent / "data" / "chatterbot_topics.jsonl.gz"
TOPICS = ("ai", "emotion", "psychology", "humor", "literature", "money", "science", "sports", "movies", "politics")
# chatterbot-corpus folder -> ISO 639-1 code.
LANGUAGES = {
    "english": "en", "spanish": "es", "persian": "fa", "italian": "it", "japanese": "ja", "korean": "ko",
    "dutch": "nl", "ukrainian": "uk", "chinese": "zh",
}
# Files named in the language itself: (folder, file stem) -> topic.
TOPIC_ALIASES = {
    ("spanish", "IA"): "ai", ("spanish", "dinero"): "money", ("spanish", "emociones"): "emotion",
    ("spanish", "psicologia"): "psychology", ("dutch", "sport"): "sports",
}


def default_corpus() -> Path:
    try:
        import chatterbot_corpus
    except ImportError:
        sys.exit("chatterbot-corpus is not installed: pass --corpus DIR (the unzipped wheel)")
    return Path(chatterbot_corpus.__file__).resolve().parent.parent


def build(corpus: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for folder, code in LANGUAGES.items():
        for path in sorted((corpus / "chatterbot_corpus" / "data" / folder).glob("*.yml")):
            topic = TOPIC_ALIASES.get((folder, path.stem), path.stem)
            if topic not in TOPICS:
                continue
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for index, turns in enumerate(data.get("conversations") or []):
                lines = [str(t).strip() for t in (turns if isinstance(turns, list) else [turns]) if str(t).strip()]
                if lines:
                    rows.append({"external_id": f"{code}-{topic}-{index}", "text": "\n".join(lines),
                                 "label": topic, "meta": {"language": code}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="folder holding chatterbot_corpus/data (an unzipped wheel)")
    args = parser.parse_args()
    rows = build(args.corpus or default_corpus())
    with gzip.GzipFile(OUT, "wb", mtime=0) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    counts: dict[str, int] = {}
    for row in rows:
        code = row["meta"]["language"]  # type: ignore[index]
        counts[code] = counts.get(code, 0) + 1
    print(f"{len(rows)} rows -> {OUT}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
