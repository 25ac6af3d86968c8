"""Roles, capabilities and the one table between them: the whole authorisation policy.

A membership gives a user one ``Role`` in a project; what a role may do is ``ROLE_CAPABILITIES`` and nothing else,
read through ``role_allows``. Every check goes through it: ``Project.objects.get_for`` (labeling/querysets.py), the
API's permissions and the queue's hand-written access query (labeling/api/views_queue.py, parity-tested). This module
imports only Django's enum types, so the queryset can use it without importing the models that use the queryset.
"""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    REVIEWER = "reviewer", "Reviewer"
    POLICY_LEAD = "policy_lead", "Policy lead"
    ML_ENGINEER = "ml_engineer", "ML engineer"
    ADMIN = "admin", "Admin"


class Capability(models.TextChoices):
    VIEW = "view", "See the project and its guidelines"
    LABEL = "label", "Take items from the queue and submit labels"
    IMPORT = "import", "Import items and gold items"
    EDIT_TAXONOMY = "edit_taxonomy", "Edit, publish and migrate the taxonomy"
    ADJUDICATE = "adjudicate", "Decide disagreements"
    VIEW_STATS = "view_stats", "See agreement, reviewer and prevalence figures"
    EXPORT = "export", "Export training sets and model lineage"
    MANAGE = "manage", "Change project settings and memberships"
    REVEAL_PII = "reveal_pii", "Reveal the unmasked text of an item (audited)"
    DELETE_ITEMS = "delete_items", "Hard-delete items on request (audited tombstone)"
    ASSIGN_LANGUAGES = "assign_languages", "Give members the languages they review (the queue's language filter)"


# The whole authorisation policy in one table; tests/security/test_authorisation_matrix.py walks it.
ROLE_CAPABILITIES: dict[str, frozenset[str]] = {
    Role.REVIEWER: frozenset({Capability.VIEW, Capability.LABEL}),
    # Reveal: leads decide policy on the hard cases and sometimes need the identifiers; every reveal is audited.
    Role.POLICY_LEAD: frozenset({Capability.VIEW, Capability.LABEL, Capability.IMPORT, Capability.EDIT_TAXONOMY,
                                 Capability.ADJUDICATE, Capability.VIEW_STATS, Capability.REVEAL_PII,
                                 # Leads know who reads which language; assigning them routes the queue.
                                 Capability.ASSIGN_LANGUAGES}),
    Role.ML_ENGINEER: frozenset({Capability.VIEW, Capability.IMPORT, Capability.VIEW_STATS, Capability.EXPORT}),
    Role.ADMIN: frozenset(Capability.values),
}


def role_allows(role: str, capability: str) -> bool:
    return capability in ROLE_CAPABILITIES.get(role, frozenset())
