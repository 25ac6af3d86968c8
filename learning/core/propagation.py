"""Label propagation rules, plain Python: which cluster members a representative's answer covers, and which of
those are sent to a human anyway (verification).

Shared by the propagation service (labeling side) and bench/campaigns.py, so the benchmark measures the rule
the product applies.

- A member is covered when its similarity to the representative is at least the label's threshold.
- Verification is a fixed share of covered members, picked by a stable hash of (salt, item id): the same item is
  always picked or not, whatever order answers come in and however often a propagation is re-evaluated (an undo
  and a redo pick the same items). Over many items the picked share converges to ``share``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

DEFAULT_SIMILARITY_THRESHOLD = 0.8
DEFAULT_VERIFICATION_SHARE = 0.05


def verification_pick(item_id: int, *, share: float, salt: str = "") -> bool:
    """Is this propagated item one of the fixed share that a human reviews anyway?"""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.blake2b(f"{salt}:{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def covered_members(members: Iterable[tuple[int, float]], *, threshold: float) -> list[int]:
    """Ids of the ``(item_id, similarity)`` members a representative's answer applies to, in the order given."""
    return [item_id for item_id, similarity in members if similarity >= threshold]


OFF, SUGGEST, PROPAGATE = "off", "suggest", "propagate"


def answer_policy(policies: list[tuple[str, float, float]]) -> tuple[str, float, float]:
    """The policy of an answer from its labels' ``(mode, threshold, verification_share)``: the most cautious one.

    An answer propagates only when every one of its labels propagates, and then under the highest threshold and the
    largest verification share among them (a multi-label answer is only as automatic as its least automatic label).
    It is suggested when every label at least suggests. No labels at all (an empty answer): off.
    """
    if not policies:
        return OFF, 1.0, 1.0
    modes = {mode for mode, _threshold, _share in policies}
    threshold = max(threshold for _mode, threshold, _share in policies)
    share = max(share for _mode, _threshold, share in policies)
    if modes == {PROPAGATE}:
        return PROPAGATE, threshold, share
    if modes <= {PROPAGATE, SUGGEST}:
        return SUGGEST, threshold, share
    return OFF, threshold, share
