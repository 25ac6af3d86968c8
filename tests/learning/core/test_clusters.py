"""Near-duplicate clustering (learning/core/clusters.py): exact, near and paraphrase matches, stars, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from learning.core.clusters import ClusterIndex, exact_key, normalise_text

SCAM = "WINNER!! You have won a £1000 prize. Call 09061701461 now to claim, code KL341. Valid 12 hours only"


def test_normalisation_ignores_numbers_links_case_and_punctuation() -> None:
    assert normalise_text("Call 0800-123 NOW!!  http://x.co/a?b=1") == "call 0 0 now url"
    assert exact_key("Call 0800 123 now") == exact_key("call 0900 555, NOW.")
    assert exact_key("call now") != exact_key("call later")


def test_exact_near_and_new_clusters_with_their_representatives() -> None:
    index = ClusterIndex(random_state=0)
    texts = [
        SCAM,
        SCAM.replace("09061701461", "09066364589").replace("KL341", "KL777"),  # exact after normalising
        SCAM.replace("now to claim", "today to claim"),  # one word changed: near
        "Are we still meeting for lunch tomorrow at the usual place?",
        "are we still meeting for lunch tomorrow at the usual place",  # exact
        "Completely different message about the weather in Lisbon this weekend",
    ]
    out = index.assign([10, 11, 12, 13, 14, 15], texts)
    assert [(a.item_id, a.representative_id, a.kind) for a in out] == [
        (10, 10, "representative"), (11, 10, "exact"), (12, 10, "near"),
        (13, 13, "representative"), (14, 13, "exact"), (15, 15, "representative")]
    assert out[1].similarity == 1.0
    assert 0.6 <= out[2].similarity < 1.0
    assert index.n_representatives == 3


def test_members_always_point_at_the_representative_never_at_a_member() -> None:
    base = "please verify your account at the link below or it will be suspended within one day"
    drift = base.replace("verify", "confirm")
    drift2 = drift.replace("suspended", "closed")
    out = ClusterIndex().assign([1, 2, 3], [base, drift, drift2])
    assert [a.representative_id for a in out] == [1, 1, 1]


def test_paraphrase_by_embedding_cosine() -> None:
    rng = np.random.default_rng(3)
    v = rng.standard_normal(32)
    close = v + 0.05 * rng.standard_normal(32)
    far = rng.standard_normal(32)
    index = ClusterIndex(cosine_threshold=0.95)
    out = index.assign([1, 2, 3], ["the parcel is waiting, pay the fee", "your package is held until you pay",
                                    "lovely dinner yesterday"], np.stack([v, close, far]))
    assert [(a.representative_id, a.kind) for a in out] == [(1, "representative"), (1, "paraphrase"),
                                                              (3, "representative")]
    assert out[1].similarity >= 0.95


def test_incremental_equals_one_shot_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    templates = [" ".join(rng.choice(words, 12)) for _ in range(5)]
    texts = [t.replace(words[int(rng.integers(10))], "zulu", 1) for t in templates for _ in range(20)]
    ids = list(range(1, len(texts) + 1))
    one_shot = ClusterIndex(random_state=7).assign(ids, texts)
    rebuilt = ClusterIndex(random_state=7)
    first = rebuilt.assign(ids[:50], texts[:50])
    # A later run rebuilds the index from stored signatures of the representatives, then goes on.
    resumed = ClusterIndex(random_state=7)
    for a in first:
        if a.kind == "representative":
            resumed.add_representative(a.item_id, resumed.signature_from_bytes(a.signature.exact_key,
                                                                               a.signature.to_bytes()))
    second = resumed.assign(ids[50:], texts[50:])
    key = [(a.item_id, a.representative_id, a.kind, a.similarity) for a in one_shot]
    assert key == [(a.item_id, a.representative_id, a.kind, a.similarity) for a in first + second]
    assert key == [(a.item_id, a.representative_id, a.kind, a.similarity)
                   for a in ClusterIndex(random_state=7).assign(ids, texts)]


def test_many_representatives_survive_the_band_merge() -> None:
    index = ClusterIndex()
    index.bands_.MERGE_AT = 64  # force several merges of the compact buckets
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    texts = [" ".join("".join(rng.choice(letters, 5)) for _ in range(10)) for _ in range(300)]
    first = index.assign(list(range(300)), texts)
    # Changing one word of ten keeps 15 of 19 shingles: a near duplicate of its own original, found after merges.
    edited = [" ".join(["zzzzz", *t.split()[1:]]) for t in texts]
    again = index.assign(list(range(1000, 1300)), edited)
    assert all(a.kind == "representative" for a in first)
    assert [(a.representative_id, a.kind) for a in again] == [(i, "near") for i in range(300)]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        ClusterIndex().assign([1, 2], ["one"])
    with pytest.raises(ValueError, match="64"):
        ClusterIndex().signature_from_bytes("k", b"\x00" * 12)
