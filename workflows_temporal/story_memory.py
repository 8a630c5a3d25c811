"""Pure helpers of story memory and story seeds: token estimate, recall decision, node seed.

Deterministic (no clock, randomness, env or I/O), so workflows may call them during replay and
the store's recall activity counts tokens the same way.
"""

from __future__ import annotations

import hashlib
import math

__all__ = ["approx_tokens", "needs_recall", "node_seed"]

# Token estimate: words × 1.3 (rounded up). English prose averages ~1.3 tokens per word in the
# Llama/GPT tokenizers; close enough for a budget, and independent of the model.
TOKENS_PER_WORD = 1.3


def approx_tokens(text: str) -> int:
    """Approximate token count of ``text``: whitespace-separated words × 1.3, rounded up."""
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)


def needs_recall(summaries: list[str], budget_tokens: int) -> bool:
    """True when the path's summaries together exceed the context budget."""
    return sum(approx_tokens(s) for s in summaries) > budget_tokens


def node_seed(story_id: str, node_id: str) -> int:
    """The image seed of a node: the first 4 bytes of sha256("story/node"). Re-rendering the
    node gives the same picture unless the user passes a new seed."""
    digest = hashlib.sha256(f"{story_id}/{node_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
