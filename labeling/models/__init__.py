"""The ground floor: every table of the human side. Nothing here imports services, the API or learning."""

from __future__ import annotations

from labeling.models.annotations import Adjudication, Annotation
from labeling.models.audit import AppendOnlyError, AuditChainHead, AuditEvent, audit_chain_key
from labeling.models.banks import (
    BANK_BOOST,
    BankEntry,
    BankEntryKind,
    BankEntryStatus,
    BankMatch,
    BankMatchKind,
    BankPolarity,
    MatchBank,
)
from labeling.models.clusters import ClusterKind, ClusterMember
from labeling.models.counters import ItemCount, ItemCounts
from labeling.models.exports import ExportSnapshot
from labeling.models.images import ItemImage
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
from labeling.models.label_errors import OPEN_STATES, Candidate, SuspectedError, SuspicionState
from labeling.models.projects import Membership, Organisation, Project
from labeling.models.propagation import AnswerSource, PropagationMode, PropagationPolicy
from labeling.models.queue import Lease, RankingEntry, RankingEntryManager, RankingRow, SelectionReason
from labeling.models.roles import ROLE_CAPABILITIES, Capability, Role, role_allows
from labeling.models.taxonomy import ImmutableVersionError, Label, LabelMigration, TaxonomyVersion
from labeling.models.wellness import BLUR_ORDER, BlurLevel, ReviewerWellness, WellnessPolicy

__all__ = [
    "BANK_BOOST",
    "BLUR_ORDER",
    "META_MAX_DEPTH",
    "META_TOO_DEEP",
    "OPEN_STATES",
    "ROLE_CAPABILITIES",
    "Adjudication",
    "Annotation",
    "AnswerSource",
    "AppendOnlyError",
    "AuditChainHead",
    "AuditEvent",
    "BankEntry",
    "BankEntryKind",
    "BankEntryStatus",
    "BankMatch",
    "BankMatchKind",
    "BankPolarity",
    "BlurLevel",
    "Candidate",
    "Capability",
    "ClusterKind",
    "ClusterMember",
    "ExportSnapshot",
    "ImmutableVersionError",
    "ImportJob",
    "Item",
    "ItemCount",
    "ItemCounts",
    "ItemImage",
    "Label",
    "LabelCounter",
    "LabelMigration",
    "Lease",
    "MatchBank",
    "Membership",
    "Organisation",
    "Project",
    "PropagationMode",
    "PropagationPolicy",
    "RankingEntry",
    "RankingEntryManager",
    "RankingRow",
    "ReviewerWellness",
    "Role",
    "SelectionReason",
    "Split",
    "SuspectedError",
    "SuspicionState",
    "TaxonomyVersion",
    "WellnessPolicy",
    "audit_chain_key",
    "json_depth",
    "json_map",
    "json_text_too_deep",
    "meta_shown",
    "role_allows",
]
