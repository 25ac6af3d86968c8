"""Creating projects and managing their memberships."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling.models import Lease, Membership, Project, Role
from labeling.services.audit import Actor, acting_user, audit_record
from labeling.services.credentials import tokens_revoke
from labeling.services.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from labeling.services.taxonomy import taxonomy_publish_document
from labeling.services.taxonomy_io import taxonomy_parse
from learning.core.vocabulary import STRATEGY_CHOICES
from learning.scheduling import embedder_names, request_retrain

# "default" and every strategy the core registers (learning/core/vocabulary.py is the names' one home).
KNOWN_STRATEGIES = STRATEGY_CHOICES


def project_embedder_choices() -> tuple[str, ...]:
    """The embedder names a project may choose, for the pages' forms (the frontend reaches learning only through
    the services)."""
    return embedder_names()


def project_creation_allowed(user: Any) -> bool:
    """May ``user`` create projects? ``SIFT_PROJECT_CREATORS`` decides: "admins" (the default) is superusers and
    holders of Django's ``labeling.add_project`` permission; "all" is every active signed-in user."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if django_settings.SIFT_PROJECT_CREATORS == "all":
        return True
    return bool(user.has_perm("labeling.add_project"))


def project_create(*, actor: Actor, slug: str, name: str, taxonomy: Any,
                   overlap: int = 1, strategy: str = "default", **settings: Any) -> Project:
    """Create a project with its first published taxonomy version; the creator becomes its admin.

    A user actor must pass ``project_creation_allowed`` (checked first, so a refused caller learns nothing about
    the slug); ``actor=None`` is an operator's command."""
    creator = acting_user(actor)
    if creator is not None and not project_creation_allowed(creator):
        raise PermissionDenied("you may not create projects; ask a Sift administrator")
    parsed = taxonomy_parse(taxonomy)
    if not 1 <= overlap <= 20:
        raise ValidationFailed("overlap: must be between 1 and 20", field="overlap")
    if strategy not in KNOWN_STRATEGIES:
        raise ValidationFailed(f"strategy: unknown strategy {strategy!r}; choose one of {', '.join(KNOWN_STRATEGIES)}",
                               field="strategy")
    if "embedder" in settings and settings["embedder"] not in embedder_names():
        raise ValidationFailed(f"embedder: unknown embedder {settings['embedder']!r}; choose one of "
                               f"{', '.join(embedder_names())}", field="embedder")
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
        # Slugs are one namespace across projects, so a taken slug must be refused. Only a caller allowed to
        # create projects gets this far, and the answer is the same whether or not they belong to the project
        # that holds it: "unavailable", never whose it is or that they may not see it (no membership oracle).
        raise Conflict(f"the slug {slug!r} is not available; choose another", field="slug") from exc
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


def membership_remove(*, actor: Actor, project: Project, username: str) -> None:
    """Take ``username`` out of ``project`` and revoke their API tokens (labeling/services/credentials.py says
    why). Their open leases in the project are released at once, so the items go back to the queue for others
    (the queue refuses a non-member's submit anyway); their answers stay."""
    with transaction.atomic():
        membership = (Membership.objects.select_for_update().select_related("user")
                      .filter(project=project, user__username=username).first())
        if membership is None:
            raise NotFound(f"{username!r} is not a member of this project")
        role = membership.role
        user = membership.user
        membership.delete()
        revoked = tokens_revoke(user=user)
        released = Lease.objects.filter(project=project, reviewer=user, state=Lease.State.ACTIVE).update(
            state=Lease.State.RELEASED, closed_at=timezone.now())
        audit_record(actor=actor, action="membership.remove", obj=project, project=project,
                     data={"username": username, "role": role, "tokens_revoked": revoked,
                           "leases_released": released})


def _set_validated_password(user: Any, password: str) -> None:
    """Apply Django's password validators; a weak password is a 400, never silently accepted."""
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        raise ValidationFailed("password: " + " ".join(exc.messages), field="password") from exc
    user.set_password(password)


# What the settings page may change after creation, and why the rest may not (shown beside the read-only fields).
SETTINGS_MUTABLE = ("name", "description", "strategy", "exploration_rate", "gold_rate", "show_suggestions",
                    "suggestion_holdout_rate", "lease_seconds", "seed_queries", "language_mode")
SETTINGS_FIXED = {
    "slug": "It is in every URL, API script and export file name; a new slug would break them.",
    "overlap": "Each item's required answers were fixed when it was imported; a new overlap would leave the queue "
               "counting old items one way and new ones another.",
    "embedder": "Vectors, rankings and models are keyed by it; changing it would re-embed every item and retrain "
                "from scratch, so it is an operator's decision (POST /api/projects/ sets it at creation).",
    "taxonomy": "Labels change through versions on the taxonomy page (draft, preview, publish with migrations), "
                "never in place.",
}
_LEARNING_SETTINGS = ("strategy", "exploration_rate", "seed_queries")


def project_settings_update(*, actor: Actor, project: Project, changes: dict[str, Any]) -> list[str]:
    """Apply ``changes`` (names of ``SETTINGS_MUTABLE`` only) to ``project``; returns the names that changed.

    Each value is checked against the model's validators; one audit event records old and new values. A change to
    the learning settings asks for a retrain, so the queue follows it without waiting for the next label."""
    unknown = sorted(set(changes) - set(SETTINGS_MUTABLE))
    if unknown:
        raise ValidationFailed(f"{unknown[0]}: may not be changed here", field=unknown[0])
    if "strategy" in changes and changes["strategy"] not in KNOWN_STRATEGIES:
        raise ValidationFailed(f"strategy: unknown strategy {changes['strategy']!r}", field="strategy")
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        changed = {name: (getattr(locked, name), value) for name, value in changes.items()
                   if getattr(locked, name) != value}
        for name, (_old, value) in changed.items():
            setattr(locked, name, value)
        try:
            locked.full_clean(exclude=[f.name for f in Project._meta.fields if f.name not in changed])
        except DjangoValidationError as exc:
            name, messages = next(iter(exc.message_dict.items()))
            raise ValidationFailed(f"{name}: {' '.join(messages)}", field=name) from exc
        if changed:
            locked.save(update_fields=list(changed))
            audit_record(actor=actor, action="project.settings", obj=locked, project=locked,
                         data={name: {"from": old, "to": new} for name, (old, new) in changed.items()})
            if any(name in _LEARNING_SETTINGS for name in changed):
                request_retrain(project_id=locked.pk)
    for name, (_old, value) in changed.items():
        setattr(project, name, value)
    return sorted(changed)
