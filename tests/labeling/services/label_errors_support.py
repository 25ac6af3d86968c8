"""A project with deliberately wrong answers on clearly separable data, for the label-error tests (services,
dashboard): 64 hashing-embedded items (even positions spam, odd ham), 60 answered by ann, three of them wrongly."""

from __future__ import annotations

from typing import Any

from labeling.models import Item
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory, member
from tests.learning.support import add_items, annotate, embed_items

SPAM = [f"win a free prize cash now call {i} claim your reward" for i in range(32)]
HAM = [f"see you at dinner tonight love mum {i} ok" for i in range(32)]



def noisy_project(slug: str = "noisy") -> dict[str, Any]:
    """{"project", "items", and the users ann, bob, cat, dan (reviewers) and lead (policy lead)}."""
    project = ProjectFactory(slug=slug, taxonomy=SMS_TAXONOMY, embedder="hashing")
    users = {name: member(project, username=name, role=role) for name, role in
             [("ann", "reviewer"), ("bob", "reviewer"), ("cat", "reviewer"), ("dan", "reviewer"),
              ("lead", "policy_lead")]}
    texts = [t for pair in zip(SPAM, HAM, strict=True) for t in pair]  # even positions spam, odd ham
    items = add_items(project, texts)
    embed_items(items)
    truth = {item.pk: ("spam" if "prize" in item.text else "ham") for item in items}
    wrong = {"ham": "spam", "spam": "ham"}
    # ann labels the first 60 items, three of them wrongly: items 0 and 2 (spam) she calls ham (single answers, for
    # a re-check), item 7 (ham) she calls spam.
    for position, item in enumerate(items[:60]):
        label = wrong[truth[item.pk]] if position in (0, 2, 7) else truth[item.pk]
        annotate(item, users["ann"], [label])
    # Item 7 (ham): ann and bob say spam, cat says ham: the majority is wrong and the answers already disagree.
    seventh = Item.objects.get(pk=items[7].pk)
    Item.objects.filter(pk=seventh.pk).update(n_required=3)
    annotate(seventh, users["bob"], ["spam"])
    annotate(seventh, users["cat"], ["ham"])
    return {"project": project, "items": items, **users}


