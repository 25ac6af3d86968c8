"""Match banks: signatures of items a policy lead confirmed as known violating (or known benign) for a label.

A bank holds only what identifies content, never the content: per entry the exact-duplicate key (BLAKE2b-128 of
the normalised text) and the MinHash values, both as the clustering worker computed them (ClusterMember). So a
bank can be exported and imported into another project (labeling/services/banks.py) without any text crossing.
The matching worker (learning/services/banks.py) records a ``BankMatch`` per (item, entry) with its evidence and
puts the matched item at the front of the queue (``BANK_BOOST``); deconfirming an entry withdraws its matches and
takes the boosts back.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from labeling.models.items import Item

# The queue boost a live bank match gives an open item (queue stage 1 serves ``-boost, id``). The one rule for
# taking it back: an item with no live match left whose boost is still exactly this value goes back to 0; a boost
# someone else set since (a taxonomy re-queue) is left alone.
BANK_BOOST = 50


class BankPolarity(models.TextChoices):
    VIOLATING = "violating", "Known violating"
    BENIGN = "benign", "Known benign"


class MatchBank(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="match_banks")
    name = models.CharField(max_length=100)
    label_key = models.CharField(max_length=100, help_text="The taxonomy label this bank is evidence for (or against).")
    polarity = models.CharField(max_length=16, choices=BankPolarity.choices, default=BankPolarity.VIOLATING)
    threshold = models.FloatField(default=0.8, help_text="Near match: estimated Jaccard similarity at least this.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="bank_project_name"),
            models.CheckConstraint(condition=Q(threshold__gt=0) & Q(threshold__lte=1), name="bank_threshold_range"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.polarity} {self.label_key})"


class BankEntryStatus(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed"
    DECONFIRMED = "deconfirmed", "Deconfirmed"


class BankEntryKind(models.TextChoices):
    ITEM = "item", "Confirmed item"
    CLUSTER = "cluster", "Confirmed with its cluster"
    IMPORTED = "imported", "Imported"


class BankEntry(models.Model):
    bank = models.ForeignKey(MatchBank, on_delete=models.CASCADE, related_name="entries")
    exact_key = models.CharField(max_length=32, help_text="BLAKE2b-128 of the normalised text, hex.")
    minhash = models.BinaryField(help_text="MinHash values, little-endian uint32.")
    kind = models.CharField(max_length=16, choices=BankEntryKind.choices)
    status = models.CharField(max_length=16, choices=BankEntryStatus.choices, default=BankEntryStatus.CONFIRMED)
    # Local provenance only: never exported (another project has no such item).
    source_item = models.ForeignKey("labeling.Item", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    confirmed_at = models.DateTimeField(default=timezone.now)
    deconfirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    deconfirmed_at = models.DateTimeField(null=True, blank=True)
    # NULL until the matching worker has compared every item of the project with this entry (then only new items
    # need comparing); set back to NULL when the entry is confirmed again.
    swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Same normalised text, same signature: confirming it twice is one entry.
            models.UniqueConstraint(fields=["bank", "exact_key"], name="bank_entry_key"),
        ]

    def __str__(self) -> str:
        return f"{self.bank_id}:{self.exact_key} ({self.status})"


class BankMatchKind(models.TextChoices):
    EXACT = "exact", "Exact (same normalised text)"
    NEAR = "near", "Near (MinHash Jaccard)"


class BankMatch(models.Model):
    """An item matched a bank entry: the evidence (kind, similarity), live until the entry is deconfirmed."""

    item = models.ForeignKey("labeling.Item", on_delete=models.CASCADE, related_name="bank_matches")
    entry = models.ForeignKey(BankEntry, on_delete=models.CASCADE, related_name="matches")
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=8, choices=BankMatchKind.choices)
    similarity = models.FloatField()
    created_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "entry"], name="bank_match_item_entry")]
        indexes = [models.Index(fields=["project", "item"], name="bank_match_project_item",
                                condition=Q(withdrawn_at__isnull=True))]

    def __str__(self) -> str:
        return f"{self.item_id} ~ {self.entry_id} ({self.kind} {self.similarity:.2f})"


def bank_boosts_withdraw(item_ids: list[int]) -> int:
    """Take the bank boost back from those of ``item_ids`` with no live match left (see ``BANK_BOOST``)."""
    live = BankMatch.objects.filter(item_id=models.OuterRef("pk"), withdrawn_at__isnull=True)
    return (Item.objects.filter(pk__in=item_ids, boost=BANK_BOOST).exclude(models.Exists(live))
            .update(boost=0))


def bank_boosts_apply(item_ids: list[int]) -> int:
    """Give the bank boost to those of ``item_ids`` that are still open (a higher boost is kept)."""
    return (Item.objects.filter(pk__in=item_ids, boost__lt=BANK_BOOST, n_done__lt=F("n_required"))
            .update(boost=BANK_BOOST))
