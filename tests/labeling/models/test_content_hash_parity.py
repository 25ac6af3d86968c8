"""One content hash: the importer, the vector caches and the factories all use learning.core.vocabulary's.

It used to exist twice (labeling could not import learning.core); if two copies ever drifted, every item would
look un-embedded and be embedded again. Now identity, not equality, is what ties them.
"""

from __future__ import annotations

import hashlib

import pytest

from labeling.services.items_import import item_content_hash
from learning.core.embedders import content_hash
from learning.core.vocabulary import content_hash as the_content_hash


@pytest.mark.parametrize("text", ["", "hello", "Free entry in 2 a wkly comp", "naïve café ☕", "a\r\nb\tc", "🙂" * 100])
def test_importer_and_vector_cache_hash_text_identically(text: str) -> None:
    assert item_content_hash is content_hash is the_content_hash
    assert content_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert len(content_hash(text)) == 64
