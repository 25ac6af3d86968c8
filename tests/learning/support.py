"""Helpers shared by the learning side's database tests (not a conftest: tests/learning/core runs without Django)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from typing import Any

from labeling.models import Annotation, Item, Project
from learning.core import HashingEmbedder
from learning.core.vocabulary import content_hash
from learning.services.embedding import store_vectors
from tests.conftest import SHARED_DATA

SMS_DATA = SHARED_DATA / "sms_spam.jsonl.gz"


def sms_rows(n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of the SMS spam file: {"external_id", "text", "label"}."""
    rows: list[dict[str, Any]] = []
    with gzip.open(SMS_DATA, "rt", encoding="utf-8") as handle:
        for line in handle:
            if len(rows) == n:
                break
            rows.append(json.loads(line))
    return rows


def add_items(project: Project, texts: list[str], *, prefix: str = "item") -> list[Item]:
    items = [
        Item(project=project, external_id=f"{prefix}-{i}", text=t,
             content_hash=content_hash(t), n_required=project.overlap)
        for i, t in enumerate(texts)
    ]
    Item.objects.bulk_create(items)
    return list(Item.objects.filter(project=project).order_by("id"))


def embed_items(items: Sequence[Any], *, embedder_name: str = "hashing-v1-384") -> None:
    """Store hashing vectors for ``items`` directly (what the embed task would do)."""
    vectors = HashingEmbedder().embed([i.text for i in items])
    store_vectors(embedder_name=embedder_name, hashes=[i.content_hash for i in items], vectors=vectors)


def annotate(item: Item, reviewer: Any, labels: list[str], *, reason: str = "uncertainty",
             inclusion: float | None = 1.0) -> Annotation:
    project = item.project
    assert project.current_taxonomy_version is not None
    annotation = Annotation.objects.create(
        project=project, item=item, reviewer=reviewer, taxonomy_version=project.current_taxonomy_version,
        labels=labels, selection_reason=reason, inclusion_probability=inclusion,
    )
    Item.objects.filter(pk=item.pk).update(n_done=item.n_done + 1)
    item.n_done += 1
    return annotation
