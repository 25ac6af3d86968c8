"""The importer (labeling) and the vector cache (learning.core) must hash text identically.

labeling may not import learning.core (import-linter), so the function exists twice; if the two ever
drift, every item would look un-embedded and be embedded again. This test is the tie between them.
"""

from __future__ import annotations

import pytest

from labeling.services.items_import import item_content_hash
from learning.core.embedders import content_hash


@pytest.mark.parametrize("text", ["", "hello", "Free entry in 2 a wkly comp", "naïve café ☕", "a\r\nb\tc", "🙂" * 100])
def test_importer_and_vector_cache_hash_text_identically(text: str) -> None:
    assert item_content_hash(text) == content_hash(text)
    assert len(content_hash(text)) == 64
