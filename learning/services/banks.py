"""Matching a project's items against its match banks: stored signatures -> learning.core.banks -> BankMatch.

Runs inside the clustering worker's pass (learning/services/clusters.py, under the project's CLUSTER job claim),
because that pass is where an item gets its signature (ClusterMember.exact_key and .minhash). Two sweeps:

1. the items clustered in this pass, against every confirmed entry of the project's banks;
2. every clustered item of the project, against the entries not swept yet (``BankEntry.swept_at IS NULL``: newly
   confirmed or imported), which are then marked swept.

Confirming or importing entries asks for a CLUSTER run (``learning.scheduling.request_clustering``), so sweep 2
follows on its own. Rerun-safe: a match is unique per (item, entry) and written as an upsert, so a run that
dies before marking entries swept only repeats work; an entry deconfirmed meanwhile is skipped, because the
entries are read afresh in each transaction and a deconfirmed entry's matches are withdrawn under its row lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from django.db import transaction
from django.utils import timezone

from labeling.models import BankEntry, BankEntryStatus, BankMatch, BankPolarity, ClusterMember
from labeling.models.banks import bank_boosts_apply
from learning.core.banks import BankMatcher, EntrySignature

logger = logging.getLogger(__name__)

MATCH_BATCH = 500  # items per vectorised comparison: items x entries x num_perm booleans


def _matcher(entries: Iterable[BankEntry]) -> BankMatcher:
    return BankMatcher([
        EntrySignature(entry_id=e.pk, bank_id=e.bank_id, threshold=e.bank.threshold, exact_key=e.exact_key,
                       minhash=np.frombuffer(bytes(e.minhash), dtype="<u4").astype(np.uint32))
        for e in entries])


def _match_members(project_id: int, matcher: BankMatcher, members: list[tuple[int, str, bytes]]) -> int:
    if not members:
        return 0
    minhashes = np.stack([np.frombuffer(bytes(blob), dtype="<u4") for _, _, blob in members]).astype(np.uint32)
    hits = matcher.match([m[0] for m in members], [m[1] for m in members], minhashes)
    if not hits:
        return 0
    with transaction.atomic():
        # Lock the entries (the order deconfirm takes them in, by id) and keep only those still confirmed: a
        # deconfirm that committed meanwhile must not see its withdrawn matches come back.
        live = dict(BankEntry.objects.select_for_update(of=("self",)).filter(
            pk__in=sorted({h.entry_id for h in hits}), status=BankEntryStatus.CONFIRMED).order_by("pk")
            .values_list("pk", "bank__polarity"))
        kept = [h for h in hits if h.entry_id in live]
        BankMatch.objects.bulk_create(
            [BankMatch(item_id=h.item_id, entry_id=h.entry_id, project_id=project_id, kind=h.kind,
                       similarity=h.similarity, withdrawn_at=None) for h in kept],
            update_conflicts=True, unique_fields=["item", "entry"], update_fields=["kind", "similarity",
                                                                                  "withdrawn_at"])
        # A known-violating match goes to the front for confirmation; a known-benign one only shows its evidence
        # (boosting content known to be fine would spend reviewers' time where it is least needed).
        bank_boosts_apply(sorted({h.item_id for h in kept if live[h.entry_id] == BankPolarity.VIOLATING}))
    return len(kept)


def _members(project_id: int, *, item_ids: list[int] | None, after_id: int,
             limit: int) -> list[tuple[int, str, bytes]]:
    rows = ClusterMember.objects.filter(project_id=project_id, item_id__gt=after_id)
    if item_ids is not None:
        rows = rows.filter(item_id__in=item_ids)
    return [(item_id, key, bytes(blob)) for item_id, key, blob in
            rows.order_by("item_id").values_list("item_id", "exact_key", "minhash")[:limit]]


def _sweep(project_id: int, matcher: BankMatcher, item_ids: list[int] | None) -> int:
    matched = after_id = 0
    while members := _members(project_id, item_ids=item_ids, after_id=after_id, limit=MATCH_BATCH):
        after_id = members[-1][0]
        matched += _match_members(project_id, matcher, members)
    return matched


def project_match_banks(*, project_id: int, new_item_ids: list[int]) -> int:
    """Match the newly clustered items with every confirmed entry, then every item with the unswept entries.

    Returns the number of matches written (an upsert: a rerun writes the same rows again)."""
    confirmed = list(BankEntry.objects.select_related("bank").filter(
        bank__project_id=project_id, status=BankEntryStatus.CONFIRMED).order_by("pk"))
    if not confirmed:
        return 0
    matched = _sweep(project_id, _matcher(confirmed), sorted(new_item_ids)) if new_item_ids else 0
    unswept = [e for e in confirmed if e.swept_at is None]
    if unswept:
        started = timezone.now()
        matched += _sweep(project_id, _matcher(unswept), None)
        # An entry confirmed again after ``started`` (confirmed_at later) may have been read before it was
        # re-confirmed: it stays unswept, for the next run.
        BankEntry.objects.filter(pk__in=[e.pk for e in unswept], swept_at__isnull=True,
                                 confirmed_at__lte=started).update(swept_at=started)
    if matched:
        logger.info("project %s: %d bank matches", project_id, matched)
    return matched
