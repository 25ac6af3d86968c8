"""The ground floor: every table of the human side. Nothing here imports services, the API or learning."""

from __future__ import annotations

from labeling.models.annotations import Adjudication, Annotation
from labeling.models.audit import AppendOnlyError, AuditChainHead, AuditEvent, audit_chain_key
from labeling.models.counters import ItemCount, ItemCounts
from labeling.models.exports import ExportSnapshot
from labeling.models.imports import ImportJob
from labeling.models.items import (
    META_MAX_DEPTH,
    META_TOO_DEEP,
    Item,
    Split,
    json_depth,
    json_map,
    json_text_too_deep,
    meta_shown,
)
from labeling.models.label_counter import LabelCounter
from labeling.models.projects import Membership, Organisation, Project
from labeling.models.queue import Lease, RankingEntry, RankingEntryManager, RankingRow, SelectionReason
from labeling.models.roles import ROLE_CAPABILITIES, Capability, Role, role_allows
from labeling.models.taxonomy import ImmutableVersionError, Label, LabelMigration, TaxonomyVersion

__all__ = [
    "META_MAX_DEPTH",
    "META_TOO_DEEP",
    "ROLE_CAPABILITIES",
    "Adjudication",
    "Annotation",
    "AppendOnlyError",
    "AuditChainHead",
    "AuditEvent",
    "Capability",
    "ExportSnapshot",
    "ImmutableVersionError",
    "ImportJob",
    "Item",
    "ItemCount",
    "ItemCounts",
    "Label",
    "LabelCounter",
    "LabelMigration",
    "Lease",
    "Membership",
    "Organisation",
    "Project",
    "RankingEntry",
    "RankingEntryManager",
    "RankingRow",
    "Role",
    "SelectionReason",
    "Split",
    "TaxonomyVersion",
    "audit_chain_key",
    "json_depth",
    "json_map",
    "json_text_too_deep",
    "meta_shown",
    "role_allows",
]
