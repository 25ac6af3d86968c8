"""Match banks: policy leads confirm items (or whole clusters) as known violating or known benign for a label.

What lives here: creating a bank, confirming items and clusters into it, deconfirming an entry (its matches are
withdrawn and the boosts they gave are taken back), exporting a bank as JSON and importing one (hashes and
signatures only, never text), and the evidence of an item's live matches shown on the labelling page and in its
history. The matching itself runs in the clustering worker's pass (learning/services/banks.py, asked for here
through ``learning.scheduling.request_clustering``), because that pass is where an item gets its signature.

What a match does: it boosts the open item to the front of the queue for confirmation (``BANK_BOOST``) and records
its evidence (entry, exact or near, similarity). It never labels the item by itself: pre-labelling needs an answer
source the annotation model does not have yet (see the issue note).

The invariant of deconfirm: it locks the entry row, marks it deconfirmed and withdraws its matches in one
transaction; the worker writes matches only for entries it finds still confirmed under the same row lock, so a
withdrawn match never comes back from a pass that read the entry before the deconfirm.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling.models import (
    BankEntry,
    BankEntryKind,
    BankEntryStatus,
    BankMatch,
    BankPolarity,
    ClusterMember,
    Item,
    Label,
    MatchBank,
    Project,
)
from labeling.models.banks import bank_boosts_withdraw
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import Conflict, NotFound, ValidationFailed
from learning import scheduling

BANK_FORMAT = "sift-match-bank"
BANK_FORMAT_VERSION = 1
# The signature scheme items are hashed with (learning/core/clusters.py, learning/services/clusters.py): a bank
# from a project with another scheme could not match anything, so an import names it and is refused otherwise.
SIGNATURE_SCHEME = {"normalisation": "nfkc-casefold-placeholders-v1", "exact_key": "blake2b-128",
                    "minhash": "datasketch-crc32-word-1-2-grams", "num_perm": 64, "seed": 0}
MINHASH_BYTES = SIGNATURE_SCHEME["num_perm"] * 4  # type: ignore[operator]
MAX_IMPORT_ENTRIES = 100_000
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _label_keys(project: Project) -> set[str]:
    version_id = project.current_taxonomy_version_id
    return set(Label.objects.filter(version_id=version_id).values_list("key", flat=True)) if version_id else set()


def _check_bank_fields(project: Project, *, name: str, label_key: str, polarity: str, threshold: float) -> None:
    if not name.strip() or len(name) > 100:
        raise ValidationFailed("a bank needs a name of 1 to 100 characters")
    if label_key not in _label_keys(project):
        raise ValidationFailed(f"label {label_key!r} is not in the project's current taxonomy", field="label")
    if polarity not in BankPolarity.values:
        raise ValidationFailed(f"polarity must be one of {', '.join(BankPolarity.values)}", field="polarity")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise ValidationFailed("threshold must be a number in (0, 1]", field="threshold")


def bank_create(*, actor: Actor, project: Project, name: str, label_key: str,
                polarity: str = BankPolarity.VIOLATING, threshold: float = 0.8) -> MatchBank:
    _check_bank_fields(project, name=name, label_key=label_key, polarity=polarity, threshold=threshold)
    try:
        with transaction.atomic():
            bank = MatchBank.objects.create(project=project, name=name.strip(), label_key=label_key,
                                            polarity=polarity, threshold=float(threshold),
                                            created_by=acting_user(actor))
            audit_record(actor=actor, action="bank.create", obj=bank, project=project,
                         data={"name": bank.name, "label": label_key, "polarity": polarity,
                               "threshold": bank.threshold})
    except IntegrityError:
        raise Conflict(f"project {project.slug!r} already has a bank named {name.strip()!r}") from None
    return bank


def bank_get(*, project: Project, bank_id: int) -> MatchBank:
    bank = MatchBank.objects.filter(project=project, pk=bank_id).first()
    if bank is None:
        raise NotFound(f"no bank {bank_id} in project {project.slug!r}")
    return bank


def bank_list(*, project: Project) -> list[dict[str, Any]]:
    from django.db.models import Count, Q

    banks = (MatchBank.objects.filter(project=project).order_by("name")
             .annotate(confirmed=Count("entries", filter=Q(entries__status=BankEntryStatus.CONFIRMED)),
                       deconfirmed=Count("entries", filter=Q(entries__status=BankEntryStatus.DECONFIRMED))))
    return [bank_summary(bank) | {"entries_confirmed": bank.confirmed, "entries_deconfirmed": bank.deconfirmed}
            for bank in banks]


def bank_summary(bank: MatchBank) -> dict[str, Any]:
    return {"id": bank.pk, "name": bank.name, "label": bank.label_key, "polarity": bank.polarity,
            "threshold": bank.threshold, "created_at": bank.created_at}


def bank_entries(*, bank: MatchBank) -> list[dict[str, Any]]:
    """The bank's entries with their live match counts (no text: signatures and provenance only)."""
    from django.db.models import Count, Q

    rows = (bank.entries.order_by("pk").select_related("confirmed_by", "deconfirmed_by")
            .annotate(live=Count("matches", filter=Q(matches__withdrawn_at__isnull=True))))
    return [{"id": e.pk, "exact_key": e.exact_key, "kind": e.kind, "status": e.status,
             "source_item": e.source_item_id, "confirmed_by": e.confirmed_by.username if e.confirmed_by else None,
             "confirmed_at": e.confirmed_at, "deconfirmed_by": e.deconfirmed_by.username if e.deconfirmed_by else None,
             "deconfirmed_at": e.deconfirmed_at, "live_matches": e.live} for e in rows]


def _confirm_signatures(*, actor: Actor, bank: MatchBank, signatures: list[tuple[str, bytes, int | None]],
                        kind: str) -> list[BankEntry]:
    """Upsert one entry per exact key: new ones created, deconfirmed ones confirmed again (to be swept anew)."""
    now = timezone.now()
    user = acting_user(actor)
    by_key: dict[str, tuple[bytes, int | None]] = {}
    for key, blob, item_id in signatures:
        by_key.setdefault(key, (blob, item_id))
    existing = {e.exact_key: e for e in BankEntry.objects.select_for_update().filter(
        bank=bank, exact_key__in=sorted(by_key)).order_by("pk")}
    touched: list[BankEntry] = []
    for key, (blob, item_id) in sorted(by_key.items()):
        entry = existing.get(key)
        if entry is None:
            touched.append(BankEntry.objects.create(bank=bank, exact_key=key, minhash=bytes(blob), kind=kind,
                                                    source_item_id=item_id, confirmed_by=user, confirmed_at=now))
        elif entry.status == BankEntryStatus.DECONFIRMED:
            entry.status, entry.confirmed_by, entry.confirmed_at = BankEntryStatus.CONFIRMED, user, now
            entry.deconfirmed_by, entry.deconfirmed_at, entry.swept_at = None, None, None
            entry.save(update_fields=["status", "confirmed_by", "confirmed_at", "deconfirmed_by",
                                      "deconfirmed_at", "swept_at"])
            touched.append(entry)
    return touched


def bank_confirm(*, actor: Actor, bank: MatchBank, item_ids: list[int], with_cluster: bool = False) -> dict[str, Any]:
    """Confirm items (and, ``with_cluster``, every member of their clusters) into the bank.

    An item is confirmed by its signature, so it must have been clustered (the worker computes signatures after
    embedding); one that has not is refused, naming it, and nothing is written. Idempotent: an exact key already
    confirmed in the bank is left as it is. Returns the entries created or confirmed again."""
    project = bank.project
    wanted = sorted(set(item_ids))
    if not wanted:
        raise ValidationFailed("give at least one item id", field="items")
    found = set(Item.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True))
    if missing := [i for i in wanted if i not in found]:
        raise NotFound(f"no item {missing[0]} in project {project.slug!r}")
    members = dict(ClusterMember.objects.filter(item_id__in=wanted).values_list("item_id", "representative_id"))
    if unsigned := [i for i in wanted if i not in members]:
        raise ValidationFailed(f"item {unsigned[0]} has no signature yet: the clustering worker has not reached it",
                               field="items")
    rows = ClusterMember.objects.filter(item_id__in=wanted)
    if with_cluster:
        rows = ClusterMember.objects.filter(representative_id__in=sorted(set(members.values())))
    signatures: list[tuple[str, bytes, int | None]] = [(key, bytes(blob), item_id) for item_id, key, blob in
                  rows.order_by("item_id").values_list("item_id", "exact_key", "minhash")]
    kind = BankEntryKind.CLUSTER if with_cluster else BankEntryKind.ITEM
    with transaction.atomic():
        MatchBank.objects.select_for_update().filter(pk=bank.pk).first()  # one confirm per bank at a time
        entries = _confirm_signatures(actor=actor, bank=bank, signatures=signatures, kind=kind)
        audit_record(actor=actor, action="bank.confirm", obj=bank, project=project,
                     data={"items": wanted, "with_cluster": with_cluster, "signatures": len(signatures),
                           "entries": [e.pk for e in entries]})
        if entries:
            scheduling.request_clustering(project_id=project.pk)
    return {"bank": bank.pk, "items": wanted, "signatures": len(signatures), "entries": [e.pk for e in entries]}


def bank_entry_deconfirm(*, actor: Actor, bank: MatchBank, entry_id: int) -> dict[str, Any]:
    """Deconfirm one entry: its live matches are withdrawn and the bank boosts they gave are taken back."""
    with transaction.atomic():
        entry = BankEntry.objects.select_for_update().filter(bank=bank, pk=entry_id).first()
        if entry is None:
            raise NotFound(f"no entry {entry_id} in bank {bank.pk}")
        if entry.status == BankEntryStatus.DECONFIRMED:
            return {"entry": entry.pk, "withdrawn": 0, "items": []}
        now = timezone.now()
        entry.status, entry.deconfirmed_by, entry.deconfirmed_at = (BankEntryStatus.DECONFIRMED,
                                                                     acting_user(actor), now)
        entry.save(update_fields=["status", "deconfirmed_by", "deconfirmed_at"])
        live = BankMatch.objects.filter(entry=entry, withdrawn_at__isnull=True)
        item_ids = sorted(live.values_list("item_id", flat=True))
        withdrawn = live.update(withdrawn_at=now)
        unboosted = bank_boosts_withdraw(item_ids)
        audit_record(actor=actor, action="bank.deconfirm", obj=entry, project=bank.project,
                     data={"bank": bank.pk, "exact_key": entry.exact_key, "withdrawn": withdrawn,
                           "items": item_ids, "unboosted": unboosted})
    return {"entry": entry.pk, "withdrawn": withdrawn, "items": item_ids}


def bank_export(*, actor: Actor, bank: MatchBank) -> dict[str, Any]:
    """The bank as shareable JSON: its settings and the confirmed entries' signatures. No text, no item ids,
    no reviewer names: nothing that identifies content or people of this project."""
    entries = [{"exact_key": e.exact_key, "minhash": base64.b64encode(bytes(e.minhash)).decode("ascii"),
                "kind": e.kind, "confirmed_at": e.confirmed_at.isoformat()}
               for e in bank.entries.filter(status=BankEntryStatus.CONFIRMED).order_by("pk")]
    audit_record(actor=actor, action="bank.export", obj=bank, project=bank.project,
                 data={"entries": len(entries)})
    return {"format": BANK_FORMAT, "version": BANK_FORMAT_VERSION, "signature": dict(SIGNATURE_SCHEME),
            "name": bank.name, "label": bank.label_key, "polarity": bank.polarity, "threshold": bank.threshold,
            "entries": entries}


def _parse_entries(raw: Any) -> list[tuple[str, bytes]]:
    if not isinstance(raw, list):
        raise ValidationFailed("'entries' must be a list", field="entries")
    if len(raw) > MAX_IMPORT_ENTRIES:
        raise ValidationFailed(f"at most {MAX_IMPORT_ENTRIES} entries per import", field="entries")
    parsed: list[tuple[str, bytes]] = []
    for n, entry in enumerate(raw):
        where = f"entries[{n}]"
        if not isinstance(entry, dict) or set(entry) - {"exact_key", "minhash", "kind", "confirmed_at"}:
            raise ValidationFailed(f"{where}: an entry is an object with exact_key, minhash (and kind, "
                                   "confirmed_at) only: a bank holds no text", field=where)
        key = entry.get("exact_key")
        if not isinstance(key, str) or not _HEX32.match(key):
            raise ValidationFailed(f"{where}.exact_key: 32 lower-case hex digits expected", field=where)
        try:
            blob = base64.b64decode(str(entry.get("minhash", "")), validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed(f"{where}.minhash: not base64", field=where) from None
        if len(blob) != MINHASH_BYTES:
            raise ValidationFailed(f"{where}.minhash: {len(blob)} bytes, expected {MINHASH_BYTES}", field=where)
        parsed.append((key, blob))
    return parsed


def bank_import(*, actor: Actor, project: Project, payload: Any, name: str | None = None) -> dict[str, Any]:
    """Create a bank from exported JSON (``bank_export``). Everything is checked before anything is written:
    a bad document is refused with the first problem and the project is left as it was."""
    if not isinstance(payload, dict):
        raise ValidationFailed("a bank document is a JSON object")
    if payload.get("format") != BANK_FORMAT or payload.get("version") != BANK_FORMAT_VERSION:
        raise ValidationFailed(f"not a bank document: expected format {BANK_FORMAT!r} version "
                               f"{BANK_FORMAT_VERSION}", field="format")
    if payload.get("signature") != SIGNATURE_SCHEME:
        raise ValidationFailed("the bank's signatures were made with another scheme and cannot match this "
                               f"project's items: expected {SIGNATURE_SCHEME}", field="signature")
    bank_name = name if name is not None else payload.get("name")
    label_key, polarity, threshold = payload.get("label"), payload.get("polarity"), payload.get("threshold")
    if not isinstance(bank_name, str) or not isinstance(label_key, str) or not isinstance(polarity, str):
        raise ValidationFailed("name, label and polarity must be strings")
    _check_bank_fields(project, name=bank_name, label_key=label_key, polarity=polarity,
                       threshold=threshold)  # type: ignore[arg-type]
    entries = _parse_entries(payload.get("entries"))
    with transaction.atomic():
        bank = bank_create(actor=actor, project=project, name=bank_name, label_key=label_key, polarity=polarity,
                           threshold=float(threshold))  # type: ignore[arg-type]
        created = _confirm_signatures(actor=actor, bank=bank, signatures=[(k, b, None) for k, b in entries],
                                      kind=BankEntryKind.IMPORTED)
        audit_record(actor=actor, action="bank.import", obj=bank, project=project,
                     data={"entries": len(created)})
        if created:
            scheduling.request_clustering(project_id=project.pk)
    return bank_summary(bank) | {"entries_confirmed": len(created), "entries_deconfirmed": 0}


def item_bank_evidence(*, project: Project, item_id: int) -> list[dict[str, Any]]:
    """The live bank matches of an item, for the labelling page: which bank, which entry, exact or near, how
    similar. Plain values only (the page renders them as text)."""
    rows = (BankMatch.objects.filter(project=project, item_id=item_id, withdrawn_at__isnull=True)
            .select_related("entry__bank").order_by("entry__bank__name", "entry_id"))
    return [{"bank": m.entry.bank.name, "bank_id": m.entry.bank_id, "label": m.entry.bank.label_key,
             "polarity": m.entry.bank.polarity, "entry": m.entry_id, "kind": m.kind, "similarity": m.similarity,
             "matched_at": m.created_at} for m in rows]


def item_bank_history(*, project: Project, item_id: int) -> list[dict[str, Any]]:
    """Every bank match of an item, withdrawn ones included, oldest first (the item's history)."""
    rows = (BankMatch.objects.filter(project=project, item_id=item_id)
            .select_related("entry__bank").order_by("created_at", "pk"))
    return [{"bank": m.entry.bank.name, "label": m.entry.bank.label_key, "polarity": m.entry.bank.polarity,
             "entry": m.entry_id, "kind": m.kind, "similarity": m.similarity, "matched_at": m.created_at,
             "withdrawn_at": m.withdrawn_at} for m in rows]
