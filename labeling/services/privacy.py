"""Privacy: PII masking for reviewers, the audited reveal, hard deletion on request, and retention.

Masking
-------
With ``Project.mask_pii`` on, every surface that shows an item to a person (queue/next and undo, the
labelling page, which reads those, and the adjudication list, detail and page) shows ``masked_item``'s
version: each match of the project's detectors (``email``, ``phone``, ``url``) and of its own patterns is
replaced by ``[name]``, in the text, in every string inside ``meta``, and in the reviewers' comments shown to
adjudicators. Stored text never changes. Matches of all detectors are found on the *original* text and
overlapping spans are merged before anything is replaced, so no detector sees another's output.

Every pattern runs on RE2 (``google-re2``): matching is linear in the text, whatever the pattern, so a
project's regex cannot stall the server (no backtracking; RE2 refuses backreferences and look-around at save
time, and a pattern whose compiled program exceeds ``_RE2_MAX_MEM`` is refused too). Matching runs over the
text's UTF-8 bytes and the masked text is built in one pass; each rule masks at most ``MAX_MASK_MATCHES``
matches per text, and anything after the point where a rule would need more is withheld, never shown
unmasked (bench/masking.py measures the worst case: a 1M-character text, 1 and 20 patterns). The external id
and meta's keys are masked like its values: a reviewer sees nothing the masker has not read.

Who sees raw text: nobody on those surfaces while masking is on, whatever the role (the minimum necessary;
a lead labelling sees what a reviewer sees). A role with ``Capability.REVEAL_PII`` (policy lead, admin) can
reveal one item through ``item_reveal``, which writes an ``item.reveal`` audit row (who, which item, why)
before it returns the text. Exports are NOT masked: the export capability (ML engineer, admin) exists to
produce training data, which needs the true text, and every export is already audited (``export.run``).

Hard deletion
-------------
``items_delete`` removes, in one transaction per batch of ``DELETE_BATCH`` items: the items (text and meta),
their annotations, leases, adjudications and ranking entries, the cached vectors of their content that no
remaining item shares (``learning.scheduling.forget_content``, in the same transaction), and every snapshot
of the project that may contain them (any snapshot written since the oldest deleted item was imported: its
row goes, its file is unlinked after commit). Annotations go rather than stay as anonymous rows: a label and
a reviewer's comment are facts about the content ("contains a phone number", a quoted line), and a row with
neither item nor content is useless to every reader of the table. What stays is the audit log, which is
append-only: one ``items.delete`` tombstone per batch with the item ids, a sha256 of each external id (so
"was X deleted?" can be answered without keeping X), the number of annotations removed, the snapshots purged,
who, when and why; never text or meta. A retrain is requested so the model stops reflecting deleted labels.

Retention
---------
``retention_sweep`` (the ``sift.labeling.retention_sweep`` beat task) hard-deletes, through the same code,
items older than ``Project.retention_days`` whose labelling is complete (``n_done >= n_required``), that are
not gold items (curated quality checks, deleted only on request) and have no pending adjudication. It is
idempotent: a second run finds nothing to delete.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import re2
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling.models import (
    Adjudication,
    Annotation,
    ExportSnapshot,
    Item,
    Lease,
    Project,
    RankingEntry,
    json_map,
    meta_shown,
)
from labeling.services.audit import Actor, audit_record
from labeling.services.errors import NotFound, ValidationFailed
from labeling.services.images import item_images_purge
from learning import scheduling

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Masking.

# Written for RE2 (linear time). Deliberately broad: a false positive costs a reviewer a token, a miss leaks.
# Decimal digits other than 0-9 that phone numbers are written in (RE2's \d is ASCII only): Arabic-Indic and
# Extended Arabic-Indic (Arabic, Persian, Urdu), NKo, Devanagari, Bengali, Gurmukhi, Gujarati, Oriya, Tamil,
# Telugu, Kannada, Malayalam, Thai, Lao, Tibetan, Myanmar, Khmer, Mongolian, and full-width (CJK).
_OTHER_DIGITS = (r"\x{0660}-\x{0669}\x{06F0}-\x{06F9}\x{07C0}-\x{07C9}\x{0966}-\x{096F}\x{09E6}-\x{09EF}"
                 r"\x{0A66}-\x{0A6F}\x{0AE6}-\x{0AEF}\x{0B66}-\x{0B6F}\x{0BE6}-\x{0BEF}\x{0C66}-\x{0C6F}"
                 r"\x{0CE6}-\x{0CEF}\x{0D66}-\x{0D6F}\x{0E50}-\x{0E59}\x{0ED0}-\x{0ED9}\x{0F20}-\x{0F29}"
                 r"\x{1040}-\x{1049}\x{17E0}-\x{17E9}\x{1810}-\x{1819}\x{FF10}-\x{FF19}")
# Separators inside such numbers: the ASCII ones, Arabic decimal and thousands separators, full-width and
# typographic hyphens and parentheses, the ideographic space.
_OTHER_SEPARATORS = r" .()\-\x{066B}\x{066C}\x{2010}-\x{2015}\x{3000}\x{FF08}\x{FF09}\x{FF0D}\x{FF0E}"
DETECTORS: dict[str, str] = {
    # Stops at whitespace of any script and at the Arabic and CJK punctuation that follows a link in running
    # text (without it a link glued to "،" or "。" took the rest of the sentence with it).
    "url": r"(?i)\b(?:https?://|www\.)[^\s\p{Z}<>\"'\x{060C}\x{061B}\x{3001}\x{3002}\x{FF0C}\x{FF09}\x{300D}]+",
    # Letters of any script (RE2's \w is ASCII only), with their combining marks (Devanagari's vowel signs are
    # marks, not letters): internationalised addresses are addresses too.
    "email": r"[\pL\pM\pN._%+-]+@[\pL\pM\pN-]+(?:\.[\pL\pM\pN-]+)*\.\pL[\pL\pM]+",
    # 7 to 20 digits, optionally led by + or (, with up to two separators between digits. The second branch is
    # the same number written from its first digit on in another script's digits (٠٥٠١٢٣٤٥٦٧, ९८७६५४३२१०):
    # no \b there, which is ASCII-only in RE2 and never holds between an Arabic letter and an Arabic digit.
    "phone": r"(?:\+|\(|\b)\d(?:[ .()\-]{0,2}\d){6,19}"
             rf"|[+(\x{{FF0B}}\x{{FF08}}]?[{_OTHER_DIGITS}](?:[{_OTHER_SEPARATORS}]{{0,2}}\p{{Nd}}){{6,19}}",
}
# A phone match that is really a date (2024-01-31, 31.01.2024, 31/01/2024) is left alone.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}")
MAX_PATTERNS = 20
# Per rule and text: bounds a queue/next on a 1M-character text with 20 patterns to well under a second
# (bench/masking.py). A real text has a handful of addresses; 10,000 matches of one rule is a pattern or a
# text gone wrong, and what follows the 10,000th is withheld rather than shown unmasked.
MAX_MASK_MATCHES = 10_000
WITHHELD = " [{n:,} more characters withheld: more than {limit:,} matches to mask; a lead can reveal the item]"
MAX_PATTERN_CHARS = 500
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RE2_MAX_MEM = 4 << 20


def _re2_options() -> Any:
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False
    return options


def _compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _re2_options())
    except re2.error as exc:
        message = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(message) from exc


@lru_cache(maxsize=256)
def _compiled(detectors: tuple[str, ...], patterns: tuple[tuple[str, str], ...]) -> tuple[tuple[str, Any], ...]:
    """The project's rules, compiled once per process (projects change their rules rarely)."""
    rules = [(name, _compile(DETECTORS[name])) for name in DETECTORS if name in detectors]
    rules += [(name, _compile(pattern)) for name, pattern in patterns]
    return tuple(rules)


@dataclass(frozen=True)
class Masker:
    rules: tuple[tuple[str, Any], ...]

    def text(self, value: str) -> str:
        """``value`` with every match replaced by ``[name]``, in one pass over its UTF-8 bytes.

        Bytes, not str: google-re2 given a str reports each match as character offsets, converting from byte
        offsets by a walk that grows with the text, so a 1M-character text with many matches took 17 s (and
        ~30 s for one pattern on non-ASCII text); over bytes the same work is linear. Matches are capped at
        ``MAX_MASK_MATCHES`` per rule: where a rule would find more, the text is shown up to that point and the
        rest is withheld (``WITHHELD``), never shown unmasked; a lead can reveal the item."""
        data = value.encode("utf-8", "surrogatepass")
        cut = len(data)
        spans: list[tuple[int, int, str]] = []
        for name, rule in self.rules:
            found = 0
            for match in rule.finditer(data):
                start, end = match.span()
                if start >= cut:
                    break
                if end <= start or (name == "phone" and _DATE.fullmatch(data[start:end].decode())):
                    continue
                found += 1
                if found > MAX_MASK_MATCHES:
                    cut = start
                    break
                spans.append((start, end, name))
        if not spans and cut == len(data):
            return value
        spans.sort()
        out: list[bytes] = []
        position = 0
        current_start, current_end, current_name = -1, -1, ""
        for start, end, name in spans:
            if start >= cut:
                break
            if start < current_end:  # overlapping: one token for the union, named by the first
                current_end = max(current_end, end)
                continue
            if current_end >= 0:
                out += [data[position:current_start], b"[" + current_name.encode() + b"]"]
                position = current_end
            current_start, current_end, current_name = start, end, name
        if current_end >= 0:
            out += [data[position:current_start], b"[" + current_name.encode() + b"]"]
            position = current_end
        if cut < len(data):
            tail = max(position, cut)
            out += [data[position:tail], WITHHELD.format(n=len(data[tail:].decode("utf-8", "surrogatepass")),
                                                         limit=MAX_MASK_MATCHES).encode()]
        else:
            out.append(data[position:])
        return b"".join(out).decode("utf-8", "surrogatepass")

    def value(self, value: Any) -> Any:
        """Every string in a JSON value (meta) masked, its object keys included: a key is the importer's column
        name, or whatever a JSON Lines file put there, an e-mail address say. Iterative (labeling/models/items.py
        says why); parts nested deeper than META_MAX_DEPTH read META_TOO_DEEP."""
        return json_map(value, string=self.text, key=self.text)


def masker_for(project: Project) -> Masker | None:
    """The project's masker, or None when masking is off (or has nothing to apply)."""
    if not project.mask_pii:
        return None
    detectors = tuple(d for d in (project.mask_detectors or []) if d in DETECTORS)
    patterns = tuple((str(p["name"]), str(p["pattern"])) for p in (project.mask_patterns or []))
    if not detectors and not patterns:
        return None
    return Masker(_compiled(detectors, patterns))


def masked_item(project: Project, item: Mapping[str, Any]) -> dict[str, Any]:
    """An item payload ``{"id", "external_id", "text", "meta"}`` as a reviewer may see it; a masked one says
    so with ``"masked": true`` (an unmasked one is unchanged, as before masking existed, except for meta nested
    too deeply to show: labeling/models/items.py)."""
    return mask_item(masker_for(project), item)


def mask_item(masker: Masker | None, item: Mapping[str, Any]) -> dict[str, Any]:
    """``masked_item`` with the masker given: every field a reviewer sees is masked, the external id too (the
    labelling, history and adjudication pages show it, and an upstream system may key items by address)."""
    if masker is None:
        return {**item, "meta": meta_shown(item["meta"])}
    return {**item, "external_id": masker.text(item["external_id"]), "text": masker.text(item["text"]),
            "meta": masker.value(item["meta"]), "masked": True}


def masked_text(project: Project, text: str) -> str:
    masker = masker_for(project)
    return text if masker is None else masker.text(text)


# ---------------------------------------------------------------------------------------------------------------
# Settings.


def _clean_detectors(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed("mask_detectors: a list of detector names", field="mask_detectors")
    unknown = sorted(set(value) - set(DETECTORS))
    if unknown:
        raise ValidationFailed(f"mask_detectors: unknown detector {unknown[0]!r}; choose from "
                               f"{', '.join(sorted(DETECTORS))}", field="mask_detectors")
    return [name for name in DETECTORS if name in value]


def _clean_patterns(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ValidationFailed("mask_patterns: a list of {name, pattern} objects", field="mask_patterns")
    if len(value) > MAX_PATTERNS:
        raise ValidationFailed(f"mask_patterns: at most {MAX_PATTERNS} patterns", field="mask_patterns")
    cleaned: list[dict[str, str]] = []
    names: set[str] = set(DETECTORS)
    for index, entry in enumerate(value):
        where = f"mask_patterns[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "pattern"}:
            raise ValidationFailed(f"{where}: an object with exactly 'name' and 'pattern'", field=where)
        name, pattern = entry["name"], entry["pattern"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationFailed(f"{where}.name: lower-case letters, digits and _, starting with a letter, "
                                   "at most 32", field=where)
        if name in names:
            raise ValidationFailed(f"{where}.name: {name!r} is already used", field=where)
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise ValidationFailed(f"{where}.pattern: 1 to {MAX_PATTERN_CHARS} characters", field=where)
        try:
            compiled = _compile(pattern)
        except ValueError as exc:
            raise ValidationFailed(f"{where}.pattern: not a valid RE2 pattern ({exc}); backreferences and "
                                   "look-around are not supported", field=where) from exc
        if compiled.search("") is not None:
            raise ValidationFailed(f"{where}.pattern: matches the empty string", field=where)
        names.add(name)
        cleaned.append({"name": name, "pattern": pattern})
    return cleaned


_UNSET: Any = object()


def privacy_settings(project: Project) -> dict[str, Any]:
    return {"mask_pii": project.mask_pii, "mask_detectors": list(project.mask_detectors or []),
            "mask_patterns": list(project.mask_patterns or []), "retention_days": project.retention_days}


def project_privacy_update(*, actor: Actor, project: Project, mask_pii: Any = _UNSET, mask_detectors: Any = _UNSET,
                           mask_patterns: Any = _UNSET, retention_days: Any = _UNSET) -> Project:
    """Change the project's masking and retention settings; everything is validated before anything is saved."""
    changes: dict[str, Any] = {}
    if mask_pii is not _UNSET:
        if not isinstance(mask_pii, bool):
            raise ValidationFailed("mask_pii: true or false", field="mask_pii")
        changes["mask_pii"] = mask_pii
    if mask_detectors is not _UNSET:
        changes["mask_detectors"] = _clean_detectors(mask_detectors)
    if mask_patterns is not _UNSET:
        changes["mask_patterns"] = _clean_patterns(mask_patterns)
    if retention_days is not _UNSET:
        if retention_days is not None and (isinstance(retention_days, bool) or not isinstance(retention_days, int)
                                           or not 1 <= retention_days <= 36_500):
            raise ValidationFailed("retention_days: null, or a whole number of days from 1 to 36500",
                                   field="retention_days")
        changes["retention_days"] = retention_days
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        before = privacy_settings(locked)
        for name, value in changes.items():
            setattr(locked, name, value)
        if changes:
            locked.save(update_fields=list(changes))
        audit_record(actor=actor, action="project.privacy_update", obj=locked, project=locked,
                     data={"before": before, "after": privacy_settings(locked)})
    for name, value in changes.items():
        setattr(project, name, value)
    return project


# ---------------------------------------------------------------------------------------------------------------
# Reveal.

MAX_REASON_CHARS = 500


def _reason(reason: Any, *, required: bool) -> str:
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ValidationFailed(f"reason: text of at most {MAX_REASON_CHARS} characters", field="reason")
    if required and not reason.strip():
        raise ValidationFailed("reason: required (why this content must go)", field="reason")
    return reason.strip()


def item_reveal(*, actor: Actor, project: Project, item_id: int, reason: Any = "") -> dict[str, Any]:
    """The item's stored text and meta, after an ``item.reveal`` audit row (callers check REVEAL_PII)."""
    cleaned = _reason(reason, required=False)
    with transaction.atomic():
        item = Item.objects.filter(project=project, pk=item_id).only("id", "external_id", "text", "meta").first()
        if item is None:
            raise NotFound(f"no item {item_id} in this project")
        audit_record(actor=actor, action="item.reveal", obj=item, project=project,
                     data={"item_id": item.pk, "reason": cleaned})
    return {"id": item.pk, "external_id": item.external_id, "text": item.text, "meta": meta_shown(item.meta)}


# ---------------------------------------------------------------------------------------------------------------
# Hard deletion.

DELETE_BATCH = 500
MAX_DELETE_REQUEST = 100_000


def external_id_digest(project: Project, external_id: str) -> str:
    """What the tombstone keeps of an external id: sha256 of ``<project id>:<external id>``."""
    return hashlib.sha256(f"{project.pk}:{external_id}".encode()).hexdigest()


@dataclass
class DeletionResult:
    deleted: int = 0
    annotations_deleted: int = 0
    not_found: list[str] = field(default_factory=list)
    snapshots_purged: list[str] = field(default_factory=list)
    tombstones: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "annotations_deleted": self.annotations_deleted,
                "not_found": self.not_found, "snapshots_purged": self.snapshots_purged,
                "tombstones": self.tombstones}


def _unlink_after_commit(paths: Sequence[Path]) -> None:
    def unlink() -> None:
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.exception("could not remove purged snapshot file %s", path)

    transaction.on_commit(unlink)


def _delete_batch(*, actor: Actor, project: Project, item_ids: Sequence[int], reason: str, trigger: str,
                  result: DeletionResult) -> None:
    with transaction.atomic():
        # Lock in id order, the queue's item-first order: a concurrent submit of one of them finishes first or
        # finds its lease gone (404), never a half-deleted item.
        rows = list(Item.objects.select_for_update().filter(project=project, pk__in=list(item_ids)).order_by("pk")
                    .values_list("pk", "external_id", "content_hash", "created_at"))
        if not rows:
            return
        ids = [row[0] for row in rows]
        oldest: datetime = min(row[3] for row in rows)
        Adjudication.objects.filter(item_id__in=ids).delete()
        n_annotations, _ = Annotation.objects.filter(item_id__in=ids).delete()
        Lease.objects.filter(item_id__in=ids).delete()
        # Project-scoped: the ranking table has no index on item (queue.py); its unique index leads with project.
        RankingEntry.objects.filter(project_id=project.pk, item_id__in=ids).delete()
        # Every dependent row is gone; a raw DELETE skips the ORM's cascade collection, which would scan the whole
        # (unindexed by item) ranking table once more. A new dependent table with a database foreign key makes
        # this fail loudly rather than leave rows behind.
        item_images_purge(ids)  # the rows now, every derived file once this commits
        Item.objects.filter(pk__in=ids)._raw_delete(Item.objects.db)
        scheduling.forget_content(content_hashes=sorted({row[2] for row in rows}))
        snapshots = list(ExportSnapshot.objects.filter(project=project, created_at__gte=oldest)
                         .values_list("pk", "name", "sha256", "path"))
        if snapshots:
            ExportSnapshot.objects.filter(pk__in=[s[0] for s in snapshots]).delete()
            root = Path(settings.EXPORT_ROOT).resolve()
            # A snapshot not yet written has no path (""): nothing to unlink, and never the root itself.
            paths = [p for p in ((root / s[3]).resolve() for s in snapshots if s[3]) if p.is_relative_to(root)
                     and p != root]
            _unlink_after_commit(paths)
        tombstone = audit_record(actor=actor, action="items.delete", obj=project, project=project, data={
            "trigger": trigger, "reason": reason,
            "items": [{"id": pk, "external_id_sha256": external_id_digest(project, ext)} for pk, ext, _h, _c in rows],
            "annotations_deleted": n_annotations,
            "snapshots_purged": [{"name": s[1], "sha256": s[2]} for s in snapshots],
        })
        scheduling.request_retrain(project_id=project.pk)
    result.deleted += len(ids)
    result.annotations_deleted += n_annotations
    result.snapshots_purged += [s[1] for s in snapshots]
    result.tombstones.append(tombstone.pk)


def items_delete(*, actor: Actor, project: Project, external_ids: Iterable[Any], reason: Any,
                 trigger: str = "request") -> DeletionResult:
    """Hard-delete the project's items named by ``external_ids`` (see the module essay for what goes).

    Unknown ids are reported in ``not_found`` (a repeated request deletes nothing and says so). Batches of
    ``DELETE_BATCH`` items commit one by one, so a very long request holds no lock for long; a failure leaves
    the committed batches deleted and the rest untouched, and repeating the request finishes it.
    """
    cleaned_reason = _reason(reason, required=True)
    wanted: list[str] = []
    for value in external_ids:
        if not isinstance(value, str) or not value or len(value) > 255:
            raise ValidationFailed("external_ids: each one a non-empty string of at most 255 characters",
                                   field="external_ids")
        wanted.append(value)
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise ValidationFailed("external_ids: name at least one item", field="external_ids")
    if len(wanted) > MAX_DELETE_REQUEST:
        raise ValidationFailed(f"external_ids: at most {MAX_DELETE_REQUEST:,} per request", field="external_ids")
    result = DeletionResult()
    for start in range(0, len(wanted), DELETE_BATCH):
        chunk = wanted[start:start + DELETE_BATCH]
        found = dict(Item.objects.filter(project=project, external_id__in=chunk).values_list("external_id", "pk"))
        result.not_found += [ext for ext in chunk if ext not in found]
        if found:
            _delete_batch(actor=actor, project=project, item_ids=list(found.values()), reason=cleaned_reason,
                          trigger=trigger, result=result)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Retention.


def retention_candidates(project: Project, *, now: datetime) -> Any:
    assert project.retention_days is not None
    from django.db.models import F

    pending = Adjudication.objects.filter(state=Adjudication.State.PENDING).values("item_id")
    return (Item.objects.filter(project=project, created_at__lt=now - timedelta(days=project.retention_days),
                                n_done__gte=F("n_required"), is_gold=False)
            .exclude(pk__in=pending).order_by("pk"))


def retention_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Hard-delete every project's expired, fully labelled items. Returns {project slug: items deleted}."""
    moment = now or timezone.now()
    deleted: dict[str, int] = {}
    for project in Project.objects.filter(retention_days__isnull=False).order_by("pk"):
        result = DeletionResult()
        while True:
            ids = list(retention_candidates(project, now=moment).values_list("pk", flat=True)[:DELETE_BATCH])
            if not ids:
                break
            before = result.deleted
            _delete_batch(actor=None, project=project, item_ids=ids,
                          reason=f"retention: older than {project.retention_days} days", trigger="retention",
                          result=result)
            if result.deleted == before:
                break  # deleted by someone else meanwhile; the next sweep looks again
        if result.deleted:
            deleted[project.slug] = result.deleted
    return deleted
