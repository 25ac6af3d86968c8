"""The clustering worker (learning/services/clusters.py and the sift.learning.cluster_project task): rows, reruns,
incremental runs and the ranking leaving waiting members out."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import ClusterMember, Item
from learning import tasks
from learning.services.clusters import project_cluster_items
from learning.services.pool import _unrankable_ids, load_pool
from tests.factories import ProjectFactory
from tests.learning.support import add_items, embed_items

pytestmark = pytest.mark.django_db

SCAM = "URGENT! You have won a 2000 pound prize. Call 09061701461 now to claim, code KL341, valid 12 hours"


def _rows(project: Any) -> list[tuple[str, str, str]]:
    """(member, representative, kind) by external id, in item order."""
    return [(c.item.external_id, c.representative.external_id, c.kind) for c in
            ClusterMember.objects.filter(project=project).select_related("item", "representative").order_by("item")]


def test_clusters_a_project_then_reruns_do_nothing_and_new_items_join_old_clusters() -> None:
    project = ProjectFactory(slug="clu", embedder="hashing")
    add_items(project, [SCAM, SCAM.replace("09061701461", "08000930705"), "see you at lunch tomorrow then",
                        SCAM.replace("now to claim", "today to claim")])
    gold = Item.objects.create(project=project, external_id="gold", text=SCAM, content_hash="g", is_gold=True)

    first = project_cluster_items(project_id=project.pk)
    assert (first.clustered, first.representatives) == (4, 2)
    assert _rows(project) == [("item-0", "item-0", "representative"), ("item-1", "item-0", "exact"),
                              ("item-2", "item-2", "representative"), ("item-3", "item-0", "near")]
    assert not ClusterMember.objects.filter(item=gold).exists()  # gold items are never clustered
    near = ClusterMember.objects.get(item__external_id="item-3")
    assert 0.6 <= near.similarity < 1.0 and len(bytes(near.minhash)) == 64 * 4

    # Call twice, effect once: the task finds nothing left.
    assert tasks.cluster_project.run(project.pk) == {"skipped": False, "clustered": 0, "representatives": 0}

    # Incremental: a later import joins the clusters of the earlier run (rebuilt from the stored signatures).
    add_items(project, [SCAM.replace("KL341", "ZZ999").replace("prize", "reward"), "see you at lunch tomorrow then!"],
              prefix="late")
    again = project_cluster_items(project_id=project.pk)
    assert (again.clustered, again.representatives) == (2, 0)
    assert _rows(project)[-2:] == [("late-0", "item-0", "near"), ("late-1", "item-2", "exact")]


def test_paraphrases_join_by_embedding(settings: Any) -> None:
    settings.SIFT_CLUSTER_COSINE = 0.8
    project = ProjectFactory(slug="clu-para", embedder="hashing")
    items = add_items(project, ["parcel held at depot pay customs fee here", "depot parcel held customs fee pay here"])
    embed_items(items)  # reordered words: few shared bigrams (no near duplicate), vectors at cosine 0.827
    project_cluster_items(project_id=project.pk)
    member = ClusterMember.objects.get(item=items[1])
    assert (member.representative_id, member.kind, member.similarity) == (items[0].pk, "paraphrase", 0.8269)


def test_the_ranking_leaves_out_members_whose_representative_is_open() -> None:
    project = ProjectFactory(slug="clu-rank", embedder="hashing")
    items = add_items(project, [SCAM, SCAM.replace("09061701461", "08000930705"), "see you at lunch"])
    embed_items(items)
    project_cluster_items(project_id=project.pk)
    pool = load_pool(project_id=project.pk, embedder_name="hashing-v1-384")
    assert dict(zip(pool.item_ids.tolist(), pool.rankable.tolist(), strict=True)) == {
        items[0].pk: True, items[1].pk: False, items[2].pk: True}
    assert _unrankable_ids(project.pk).tolist() == [items[1].pk]
    Item.objects.filter(pk=items[0].pk).update(n_done=1)  # the representative is answered: its members rank again
    assert _unrankable_ids(project.pk).tolist() == [items[0].pk]
