"""Near-duplicate clusters of a project's items: one row per clustered item, pointing at its representative.

Written by the clustering worker (learning/services/clusters.py, which decides them with learning/core/clusters.py)
and read by the queue (a member waits while its representative is open: labeling/services/queues.py) and the pages.
A representative points at itself, so "clustered" is "has a row", and a cluster is the rows sharing a
representative: a star, never a chain. The signature (exact key and MinHash values) is kept per item so that a
later run can rebuild the index of representatives without re-reading texts, and so that match banks can share
what identifies an item without sharing its text.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class ClusterKind(models.TextChoices):
    REPRESENTATIVE = "representative", "Representative"
    EXACT = "exact", "Exact duplicate"
    NEAR = "near", "Near duplicate"
    PARAPHRASE = "paraphrase", "Paraphrase"


class ClusterMember(models.Model):
    item = models.OneToOneField("labeling.Item", primary_key=True, on_delete=models.CASCADE, related_name="cluster")
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    # No index of its own: cluster_representative (representative, item) leads with it.
    representative = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="cluster_members",
                                       db_index=False)
    kind = models.CharField(max_length=16, choices=ClusterKind.choices)
    similarity = models.FloatField(help_text="To the representative: 1.0 exact, estimated Jaccard, or cosine.")
    exact_key = models.CharField(max_length=32, help_text="BLAKE2b-128 of the normalised text, hex.")
    minhash = models.BinaryField(help_text="MinHash values, little-endian uint32.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["representative", "item"], name="cluster_representative"),
            models.Index(fields=["project", "kind", "item"], name="cluster_project_kind"),
            # Flood alerts: the clusters that grew in the last hour (labeling/services/clusters.py).
            models.Index(fields=["project", "created_at"], name="cluster_project_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} -> {self.representative_id} ({self.kind})"
