"""Story memory's choice of context: rolling window within budget, recall by similarity."""

from __future__ import annotations

from activities.store.memory import cosine, select_context
from activities.store.models import Node
from workflows_temporal.story_memory import approx_tokens, needs_recall, node_seed


def node(depth: int, summary: str, vector: list[float] | None) -> Node:
    return Node(id=f"n{depth}", depth=depth, summary=summary, summary_embedding=vector)


def test_tokens_are_words_times_1_3_rounded_up() -> None:
    assert approx_tokens("one two three") == 4
    assert needs_recall(["word " * 10, "word " * 10], 25) and not needs_recall(["a b"], 25)


def test_within_budget_the_whole_path_goes_and_nothing_is_recalled() -> None:
    path = [node(0, "Mira finds the fox", [1.0, 0.0]), node(1, "They sail", [0.0, 1.0])]
    chosen = select_context(path, [1.0, 0.0], budget_tokens=100, max_memories=3)
    assert chosen.recent == ["Mira finds the fox", "They sail"] and chosen.memories == []


def test_over_budget_keeps_the_newest_and_recalls_the_most_similar_older_scene() -> None:
    words = " filler" * 20
    path = [
        node(0, "The silver key is hidden" + words, [1.0, 0.0]),
        node(1, "A storm breaks" + words, [0.0, 1.0]),
        node(2, "The fox sings" + words, [0.5, 0.5]),
        node(3, "Mira climbs the tower" + words, [0.0, 1.0]),
    ]
    chosen = select_context(path, [0.9, 0.1], budget_tokens=70, max_memories=3)
    assert chosen.recent == [path[3].summary]  # the parent's summary, always
    assert chosen.memories == [path[0].summary]  # the key: closest to "find the key"
    assert chosen.memory_node_ids == ["n0"]


def test_cosine_and_seeds_are_stable() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == 1.0 and cosine([], [1.0]) == 0.0
    assert node_seed("s_1", "n_1") == node_seed("s_1", "n_1") != node_seed("s_1", "n_2")
