"""factory_boy factories for the ground-floor models."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from labeling.models import Item, Membership, Project
from labeling.services.projects import project_create
from learning.core.vocabulary import content_hash

DEFAULT_TAXONOMY: dict[str, Any] = {
    "name": "Default",
    "multi_label": False,
    "labels": [{"key": "ok", "name": "OK"}, {"key": "bad", "name": "Bad"}],
}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


class ProjectFactory(factory.Factory):
    """Projects go through the real service, so they always have a published taxonomy."""

    class Meta:
        model = Project

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    taxonomy = DEFAULT_TAXONOMY
    overlap = 1

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> Project:
        return project_create(actor=None, **kwargs)

    @classmethod
    def _build(cls, model_class: Any, *args: Any, **kwargs: Any) -> Project:
        raise TypeError("ProjectFactory.build() is unsupported: a project needs its taxonomy rows, so only create()")


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"item-{n}")
    text = factory.Sequence(lambda n: f"message number {n}")
    content_hash = factory.LazyAttribute(lambda o: content_hash(o.text))
    n_required = factory.LazyAttribute(lambda o: o.project.overlap)


def member(project: Project, *, username: str, role: str) -> Any:
    user = UserFactory(username=username)
    Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return user
