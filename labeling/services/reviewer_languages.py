"""Reviewer languages: which languages a member reviews, and how the queue uses them (the project's language_mode).

A member's ``Membership.languages`` lists the language codes they read, as ``Item.language`` stores them (``hi``,
``ar``, ``zh``); empty means every language. The project's ``language_mode`` decides what the checkout does with it:

- ``off`` (the default): nothing; the checkout runs exactly the statements it ran before languages existed.
- ``only``: the reviewer is served items in their languages and undetermined ones ("" or not yet detected: they go
  to everyone, since nobody can say who reads them). Every stage (boost, gold, ranked walk, fallback) runs once,
  filtered. When nothing of theirs is left, the answer is a 204 whose Retry-After only counts their languages.
- ``prefer``: the filtered pass first; only when it serves nothing, the ordinary unfiltered pass (without gold:
  a gold check is a measurement of the reviewer in their languages).

A reviewer with no languages is served as in ``off`` whatever the mode.

How the filtered pass keeps its plans (queues.md, "Reviewer languages")
-----------------------------------------------------------------------
Each stage keeps its shape: the language is one more filter on the candidate the stage already probes by primary
key (boost, ranked walk), or a walk of the partial index ``item_open_language_random`` (project, language, random_key)
per language the reviewer reads, merged by random_key (fallback). The ranked walk is bounded by a window of
``RANKED_LANGUAGE_WINDOW`` ranks after the floor: a reviewer of a language rare in the ranking steps over other
languages' rows, and without the window a language whose open items are all held by others would walk the whole
ranking on every checkout. Past the window their items are still served, by the filtered fallback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.db import transaction

from labeling.models import Membership, Project
from labeling.services.audit import Actor, audit_record
from labeling.services.errors import NotFound, ValidationFailed

# Item.language for "nobody can tell": the detector was unsure, or (NULL, read as "") the item predates detection.
UNDETERMINED = ""
# Ranks after the floor the filtered ranked walk may look at (see the module doc).
RANKED_LANGUAGE_WINDOW = 1000
MAX_LANGUAGES = 30
_CODE = re.compile(r"^[a-z]{2,3}$")  # ISO 639-1/-3 as the fastText detector names languages (hi, ar, ceb)

# The fallback stage of a filtered pass (PostgreSQL): one walk of item_open_language_random per language, each taking
# a batch in random_key order and its row locks, merged by random_key. ``{available}`` is the queue's availability
# clause (queues._AVAILABLE). Up to a batch per language is locked for the rest of the checkout (a few rows: other
# reviewers skip them for that moment).
FALLBACK_LANGUAGE_SHAPE = """
SELECT c.id, c.external_id, c.text, c.meta FROM (VALUES {language_rows}) AS lang(code)
CROSS JOIN LATERAL (
    SELECT i.id, i.external_id, i.text, i.meta, i.random_key FROM {item} i
    WHERE i.project_id = %(project)s AND COALESCE(i.language, '') = lang.code AND {available} {rejected}
    ORDER BY i.random_key
    LIMIT %(batch)s {lock}
) c
ORDER BY c.random_key
LIMIT %(batch)s
"""

# The membership lock of a checkout in a project whose language_mode is not off: the same row lock and planner
# settings, and the reviewer's languages in the same round trip.
MEMBERSHIP_LANGUAGES_LOCK_SQL = """
SELECT {planner_settings}, m.languages FROM {membership} m
WHERE m.project_id = %(project)s AND m.user_id = %(reviewer)s {membership_lock}
"""

# The open items of the given languages (the inclusion probability of a filtered fallback pick): a walk of the
# partial index item_open_language_random per language.
OPEN_IN_LANGUAGES_SQL = """
SELECT COUNT(*) FROM {item} i
WHERE i.project_id = %(project)s AND i.n_done < i.n_required {languages}
"""


def language_passes(*, mode: str, languages: Sequence[str]) -> list[tuple[str, ...] | None]:
    """The checkout's passes: each the language codes it is limited to (with undetermined), or None for all."""
    if mode == Project.LanguageMode.OFF or not languages:
        return [None]
    mine = (*sorted(set(languages)), UNDETERMINED)
    if mode == Project.LanguageMode.ONLY:
        return [mine]
    return [mine, None]


def languages_clean(value: object) -> list[str]:
    """A language list as a member's setting: lowercase codes, each once, sorted; a clear error otherwise."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[\s,]+", value) if part]
    if not isinstance(value, list | tuple) or not all(isinstance(code, str) for code in value):
        raise ValidationFailed("languages: give a list of language codes, such as [\"hi\", \"ur\"]",
                               field="languages")
    codes = sorted({code.strip().lower() for code in value})
    bad = [code for code in codes if not _CODE.match(code)]
    if bad:
        raise ValidationFailed(f"languages: {', '.join(repr(code) for code in bad)} is not a language code; use "
                               "ISO 639 codes as the language list shows them (en, ar, hi, zh)", field="languages")
    if len(codes) > MAX_LANGUAGES:
        raise ValidationFailed(f"languages: at most {MAX_LANGUAGES} languages per member", field="languages")
    return codes


def membership_set_languages(*, actor: Actor, project: Project, username: str, languages: object) -> Membership:
    """Set the languages ``username`` reviews in ``project`` (empty: all); audited as ``membership.languages``."""
    codes = languages_clean(languages)
    with transaction.atomic():
        membership = (Membership.objects.select_for_update().select_related("user")
                      .filter(project=project, user__username=username).first())
        if membership is None:
            raise NotFound(f"{username!r} is not a member of this project")
        before = list(membership.languages or [])
        if before != codes:
            membership.languages = codes
            membership.save(update_fields=["languages"])
            audit_record(actor=actor, action="membership.languages", obj=membership, project=project,
                         data={"username": username, "before": before, "after": codes})
    return membership
