"""Reads shaped for the API and the pages: plain dicts in, plain dicts out, no writes.

One module per kind of read (import the module you need; nothing is re-exported here, so a caller that wants
queue progress does not load numpy with the quality figures):

- ``progress``: a reviewer's queue progress and the project's item and answer counts (the item-count ledger).
- ``answers``: the taxonomy and the answers quality figures read, in the project's current version.
- ``quality``: agreement, prevalence, gold, suggestions, reviewers, queue health, timeline and the stats cache.
- ``adjudication``: the adjudication queue as leads read it.
- ``taxonomy``: versions, drafts, diffs and the one guideline Markdown renderer.
- ``history``: an item's history (answers, comments, decisions), masked as the project's privacy settings say.

Callers have already authorised the project (``Project.objects.get_for``); selectors only scope by it.
"""
