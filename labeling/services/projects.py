"""Creating projects and managing their memberships."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from labeling.models import Membership, Project, Role
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.errors import Conflict, NotFound, ValidationFailed
from labeling.services.taxonomy import taxonomy_publish_document
from labeling.services.taxonomy_io import taxonomy_parse
from learning.core.vocabulary import STRATEGY_CHOICES

# "default" and every strategy the core registers (learning/core/vocabulary.py is the names' one home).
KNOWN_STRATEGIES = STRATEGY_CHOICES


def project_create(*, actor: Actor, slug: str, name: str, taxonomy: Any,
                   overlap: int = 1, strategy: str = "default", **settings: Any) -> Project:
    """Create a project with its first published taxonomy version; the creator becomes its admin."""
    parsed = taxonomy_parse(taxonomy)
    if not 1 <= overlap <= 20:
        raise ValidationFailed("overlap: must be between 1 and 20", field="overlap")
    if strategy not in KNOWN_STRATEGIES:
        raise ValidationFailed(f"strategy: unknown strategy {strategy!r}; choose one of {', '.join(KNOWN_STRATEGIES)}",
                               field="strategy")
    try:
        with transaction.atomic():
            project = Project.objects.create(
                slug=slug, name=name, overlap=overlap, strategy=strategy,
                created_by=acting_user(actor), **settings,
            )
            creator = acting_user(actor)
            if creator is not None:
                Membership.objects.create(project=project, user=creator, role=Role.ADMIN)
            audit_record(actor=actor, action="project.create", obj=project, project=project,
                         data={"slug": slug, "overlap": overlap, "strategy": strategy})
            taxonomy_publish_document(project=project, parsed=parsed, actor=actor, changelog="Initial taxonomy")
    except IntegrityError as exc:
        raise Conflict(f"a project with slug {slug!r} already exists", field="slug") from exc
    return project


def membership_add(*, actor: Actor, project: Project, username: str, role: str,
                   password: str | None = None, create_user: bool = False) -> Membership:
    """Give ``username`` one role in ``project`` (replacing any previous role)."""
    if role not in Role.values:
        raise ValidationFailed(f"role: unknown role {role!r}; choose one of {', '.join(Role.values)}", field="role")
    user_model = get_user_model()
    with transaction.atomic():
        user = user_model.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise NotFound(f"no user named {username!r}")
            user = user_model(username=username)
            if password:
                _set_validated_password(user, password)
            else:
                user.set_unusable_password()
            user.save()
        elif password:
            _set_validated_password(user, password)
            user.save(update_fields=["password"])
        membership, created = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role}
        )
        audit_record(actor=actor, action="membership.add" if created else "membership.change", obj=membership,
                     project=project, data={"username": username, "role": role})
    return membership


def _set_validated_password(user: Any, password: str) -> None:
    """Apply Django's password validators; a weak password is a 400, never silently accepted."""
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        raise ValidationFailed("password: " + " ".join(exc.messages), field="password") from exc
    user.set_password(password)
