"""Database -> arrays (learning/services/pool.py) and the ranking write path it pairs with (COPY, activate)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from labeling.models import Adjudication, Label, Project, RankingEntry, RankingRow, TaxonomyVersion
from learning.services import pool as pool_module
from learning.services.pool import PoolFormatError, decode_binary_copy, load_labels, load_pool
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory, UserFactory
from tests.learning.support import add_items, annotate, embed_items


def _copy_stream(rows: list[tuple[int, bool, bytes]]) -> bytes:
    """A PostgreSQL binary COPY stream of (bigint, boolean, bytea) rows, built by hand."""
    out = bytearray(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
    for item_id, is_open, blob in rows:
        out += struct.pack(">hiqib", 3, 8, item_id, 1, int(is_open)) + struct.pack(">i", len(blob)) + blob
    return bytes(out + struct.pack(">h", -1))


def test_decode_binary_copy_reads_fixed_width_rows() -> None:
    vectors = np.arange(12, dtype="<f2").reshape(3, 4)
    stream = _copy_stream([(7, True, vectors[0].tobytes()), (9, False, vectors[1].tobytes()),
                           (2**40, True, vectors[2].tobytes())])
    pool = decode_binary_copy(stream)
    assert pool.item_ids.tolist() == [7, 9, 2**40]
    assert pool.rankable.tolist() == [True, False, True]
    np.testing.assert_array_equal(pool.vectors, vectors)
    assert pool.vectors.dtype == np.float16 and pool.dim == 4


def test_decode_binary_copy_refuses_bad_streams() -> None:
    good = _copy_stream([(1, True, b"\x00\x3c" * 4)])
    assert len(decode_binary_copy(_copy_stream([]))) == 0
    with pytest.raises(PoolFormatError, match="truncated"):
        decode_binary_copy(good[:-2])
    with pytest.raises(PoolFormatError, match="not a PostgreSQL"):
        decode_binary_copy(b"COPY" + good[4:])
    with pytest.raises(PoolFormatError, match="mixed sizes"):
        decode_binary_copy(_copy_stream([(1, True, b"\x00\x3c" * 4), (2, True, b"\x00\x3c" * 5)]))


def test_pool_positions_map_ids_and_flag_missing_ones() -> None:
    pool = decode_binary_copy(_copy_stream([(3, True, b"\x00\x3c" * 2), (8, True, b"\x00\x3c" * 2)]))
    positions, found = pool.positions([8, 5, 3, 99])
    assert found.tolist() == [True, False, True, False]
    assert positions[found].tolist() == [1, 0]


def _embedded_project(slug: str = "pool") -> tuple[Project, list[Any]]:
    project = ProjectFactory(slug=slug, taxonomy=SMS_TAXONOMY, embedder="hashing")
    items = add_items(project, [f"text number {i}" for i in range(8)] + ["no vector"])
    embed_items(items[:8])
    return project, items


def test_load_pool_reads_open_embedded_items_in_id_order(db: Any) -> None:
    project, items = _embedded_project()
    project_b, _ = _embedded_project("other")  # same texts elsewhere: shares the vectors, not the items
    items[1].n_done = 1
    items[1].save(update_fields=["n_done"])
    items[2].is_gold = True
    items[2].save(update_fields=["is_gold"])
    pool = load_pool(project_id=project.pk, embedder_name="hashing-v1-384")
    assert pool.item_ids.tolist() == [i.pk for i in items[:8]]
    assert pool.rankable.tolist() == [True, False, False, True, True, True, True, True]
    assert pool.vectors.shape == (8, 384)
    norms = np.linalg.norm(pool.vectors.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert len(load_pool(project_id=project.pk, embedder_name="another-embedder")) == 0
    assert load_pool(project_id=project_b.pk, embedder_name="hashing-v1-384").item_ids.tolist() != \
        pool.item_ids.tolist()


def test_copy_and_cursor_paths_agree(postgres_only: None, db: Any) -> None:
    project, _ = _embedded_project()
    fast = pool_module._in_id_order(pool_module._load_pool_copy(project.pk, "hashing-v1-384"))
    plain = pool_module._in_id_order(pool_module._load_pool_cursor(project.pk, "hashing-v1-384"))
    np.testing.assert_array_equal(fast.item_ids, plain.item_ids)
    np.testing.assert_array_equal(fast.rankable, plain.rankable)
    np.testing.assert_array_equal(fast.vectors, plain.vectors)


def test_training_labels_aggregate_overlap_adjudication_and_migrations(db: Any) -> None:
    project = ProjectFactory(slug="agg", taxonomy=SMS_TAXONOMY, overlap=3)
    items = add_items(project, [f"t{i}" for i in range(6)])
    a, b, c = (UserFactory(username=n) for n in ("a", "b", "c"))
    annotate(items[0], a, ["spam"])
    annotate(items[0], b, ["spam"])
    annotate(items[0], c, ["ham"])  # majority: spam
    annotate(items[1], a, ["spam"])
    annotate(items[1], b, ["ham"])  # tie: skipped
    annotate(items[2], a, ["ham"], reason="exploration", inclusion=0.25)
    annotate(items[3], a, ["spam", "ham"])  # two keys in a single-label taxonomy: skipped
    annotate(items[4], a, ["spam"])
    annotate(items[4], b, ["spam"])
    Adjudication.objects.create(project=project, item=items[4], reason=Adjudication.Reason.MANUAL,
                                state=Adjudication.State.DECIDED, labels=["ham"],
                                taxonomy_version=project.current_taxonomy_version)
    current = project.current_taxonomy_version_id
    assert current is not None
    out = load_labels(project_id=project.pk, taxonomy_version_id=current, leaf_keys=["ham", "spam"],
                      multi_label=False)
    assert out.item_ids == [items[0].pk, items[2].pk, items[4].pk]
    assert out.labels == ["spam", "ham", "ham"]
    assert out.sampled == [False, True, False]
    assert out.inclusion == [1.0, 0.25, 1.0]
    assert dict(out.skipped) == {"tie": 1, "not_a_single_leaf": 1}

    # A later taxonomy version: answers a migration mapped count, the rest are not determinable.
    newer = TaxonomyVersion.objects.create(project=project, name="v2")
    Label.objects.create(version=newer, key="junk", name="Junk")
    Label.objects.create(version=newer, key="ham", name="Ham")
    TaxonomyVersion.objects.filter(pk=newer.pk).update(status=TaxonomyVersion.Status.PUBLISHED, number=2)
    items[0].annotations.filter(labels=["spam"]).update(mapped_labels=["junk"], mapped_taxonomy_version=newer)
    mapped = load_labels(project_id=project.pk, taxonomy_version_id=newer.pk, leaf_keys=["ham", "junk"],
                         multi_label=False)
    assert mapped.item_ids == [items[0].pk]
    assert mapped.labels == ["junk"]
    assert mapped.skipped["not_determinable"] == 7  # nine answers, two mapped


def test_multi_label_votes_per_key(db: Any) -> None:
    project = ProjectFactory(slug="ml", taxonomy={**SMS_TAXONOMY, "multi_label": True}, overlap=3)
    items = add_items(project, ["x"])
    for name, labels in (("a", ["spam", "ham"]), ("b", ["spam"]), ("c", [])):
        annotate(items[0], UserFactory(username=name), labels)
    current = project.current_taxonomy_version_id
    assert current is not None
    out = load_labels(project_id=project.pk, taxonomy_version_id=current, leaf_keys=["ham", "spam"],
                      multi_label=True)
    assert out.labels == [frozenset({"spam"})]


def test_write_batch_and_only_forward_activation(db: Any) -> None:
    project, items = _embedded_project()
    rows = [RankingRow(item_id=items[i].pk, score=0.5 - i / 10, reason="uncertainty", inclusion_probability=1.0,
                       suggested_label="spam", suggested_confidence=0.75) for i in range(3)]
    assert RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=4, start_rank=10, rows=rows) == 3
    stored = list(RankingEntry.objects.filter(project=project).order_by("rank").values_list(
        "rank", "item_id", "score", "reason", "inclusion_probability", "suggested_label", "suggested_confidence"))
    assert stored == [(10 + i, items[i].pk, 0.5 - i / 10, "uncertainty", 1.0, "spam", 0.75) for i in range(3)]
    assert RankingEntry.objects.activate(project_id=project.pk, ranking_version=4, only_if_newer=True) is True
    assert RankingEntry.objects.activate(project_id=project.pk, ranking_version=3, only_if_newer=True) is False
    project.refresh_from_db()
    assert project.active_ranking_version == 4


def test_write_columns_stores_what_write_batch_stores(db: Any) -> None:
    """The numpy COPY path (PostgreSQL) and the fallback agree, NULLs and empty labels included."""
    project, items = _embedded_project()
    ids = [i.pk for i in items[:6]]
    nan = float("nan")
    written = RankingEntry.objects.write_columns(
        project_id=project.pk, ranking_version=7, start_rank=100, item_ids=np.array(ids),
        scores=np.array([0.9, 0.8, nan, 0.6, 0.5, 0.25], dtype=np.float32),
        reasons=np.array(["uncertainty", "exploration", "cold_start_diverse", "uncertainty", "exploitation",
                          "seed_query"]),
        inclusion_probabilities=[1.0, 0.125, 1.0, 1.0, nan, 1.0],
        suggested_labels=np.array(["spam", "ham", "", "spam", "spam", "ham"], dtype=object),
        suggested_confidences=[0.75, 0.5, nan, 0.875, 0.625, nan],
    )
    assert written == 6
    stored = list(RankingEntry.objects.filter(project=project, ranking_version=7).order_by("rank").values_list(
        "rank", "item_id", "score", "reason", "inclusion_probability", "suggested_label", "suggested_confidence"))
    assert stored == [
        (100, ids[0], pytest.approx(0.9), "uncertainty", 1.0, "spam", 0.75),
        (101, ids[1], pytest.approx(0.8), "exploration", 0.125, "ham", 0.5),
        (102, ids[2], None, "cold_start_diverse", 1.0, "", None),
        (103, ids[3], pytest.approx(0.6), "uncertainty", 1.0, "spam", 0.875),
        (104, ids[4], 0.5, "exploitation", None, "spam", 0.625),
        (105, ids[5], 0.25, "seed_query", 1.0, "ham", None),
    ]
    # No labels or confidences at all (a cold start): empty strings and NULLs.
    RankingEntry.objects.write_columns(project_id=project.pk, ranking_version=8, start_rank=0, item_ids=ids[:2],
                                       scores=[0.1, 0.2], reasons=["random", "random"],
                                       inclusion_probabilities=[0.5, 0.5])
    assert list(RankingEntry.objects.filter(ranking_version=8).order_by("rank").values_list(
        "suggested_label", "suggested_confidence", "inclusion_probability")) == [("", None, 0.5), ("", None, 0.5)]
    assert RankingEntry.objects.write_columns(project_id=project.pk, ranking_version=9, start_rank=0, item_ids=[],
                                              scores=[], reasons=[], inclusion_probabilities=[]) == 0


def test_a_warm_pool_rereads_only_the_closed_items(db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.SIFT_POOL_CACHE_PROJECTS = 1
    pool_module._POOL_CACHE.clear()
    project, items = _embedded_project()
    first = load_pool(project_id=project.pk, embedder_name="hashing-v1-384", generation="g1")
    assert first.rankable.tolist() == [True] * 8

    def no_full_read(*_a: Any) -> Any:
        raise AssertionError("the vectors were read again")

    monkeypatch.setattr(pool_module, "_load_pool_copy", no_full_read)
    monkeypatch.setattr(pool_module, "_load_pool_cursor", no_full_read)
    annotate(items[0], UserFactory(username="r"), ["spam"])  # closes item 0
    items[3].is_gold = True
    items[3].save(update_fields=["is_gold"])
    warm = load_pool(project_id=project.pk, embedder_name="hashing-v1-384", generation="g1")
    assert warm.rankable.tolist() == [False, True, True, False, True, True, True, True]
    assert warm.vectors is first.vectors
    # A new generation (an embedding pass finished) reads everything again.
    with pytest.raises(AssertionError, match="read again"):
        load_pool(project_id=project.pk, embedder_name="hashing-v1-384", generation="g2")
    # One project fits: another project's pool evicts this one.
    monkeypatch.undo()
    other, _ = _embedded_project("evicts")
    load_pool(project_id=other.pk, embedder_name="hashing-v1-384", generation="g1")
    assert list(pool_module._POOL_CACHE) == [(other.pk, "hashing-v1-384")]
    pool_module._POOL_CACHE.clear()
