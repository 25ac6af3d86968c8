"""Taxonomy versions: creating drafts from documents and publishing them as immutable versions."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import Label, Project, TaxonomyVersion
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.taxonomy_io import ParsedTaxonomy


def taxonomy_version_write_labels(*, version: TaxonomyVersion, parsed: ParsedTaxonomy) -> None:
    """Create the label rows of a *draft* version; parents are created before their children."""
    by_key: dict[str, Label] = {}
    for parsed_label in parsed.labels:
        label = Label.objects.create(
            version=version, key=parsed_label.key, name=parsed_label.name, description=parsed_label.description,
            parent=by_key[parsed_label.parent_key] if parsed_label.parent_key else None,
            position=parsed_label.position, severity=parsed_label.severity, action=parsed_label.action,
            positive_examples=parsed_label.positive_examples, negative_examples=parsed_label.negative_examples,
            deprecated=parsed_label.deprecated,
        )
        by_key[label.key] = label


def taxonomy_publish_document(*, project: Project, parsed: ParsedTaxonomy,
                              actor: Actor, changelog: str = "") -> TaxonomyVersion:
    """Publish ``parsed`` as the project's next version in one transaction: all of it, or nothing."""
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        last = TaxonomyVersion.objects.filter(project=locked).aggregate(n=Max("number"))["n"] or 0
        version = TaxonomyVersion.objects.create(
            project=locked, name=parsed.name, multi_label=parsed.multi_label,
            allow_non_leaf=parsed.allow_non_leaf, changelog=changelog, status=TaxonomyVersion.Status.DRAFT,
            based_on=locked.current_taxonomy_version,
            created_by=acting_user(actor),
        )
        taxonomy_version_write_labels(version=version, parsed=parsed)
        TaxonomyVersion.objects.filter(pk=version.pk).update(
            status=TaxonomyVersion.Status.PUBLISHED, number=last + 1, published_at=timezone.now(),
            published_by=acting_user(actor),
        )
        version.refresh_from_db()
        Project.objects.filter(pk=locked.pk).update(current_taxonomy_version=version)
        project.current_taxonomy_version = version
        audit_record(actor=actor, action="taxonomy.publish", obj=version, project=locked,
                     data={"number": version.number, "labels": len(parsed.labels), "changelog": changelog})
        return version
