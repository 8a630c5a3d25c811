"""The words storyloom says to the LLM, and how it reads the answers back (title, summary)."""

from __future__ import annotations

import re

from workflows_temporal.contracts import CharacterLook, ExtractCastInput, WriteSceneInput

__all__ = ["cast_prompt", "first_sentences", "scene_prompt", "split_title", "summary_prompt"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def scene_prompt(inp: WriteSceneInput) -> str:
    parts = [
        "You are writing one scene of an illustrated, branching story.",
        f"Premise: {inp.premise.strip()}",
    ]
    if inp.summaries:
        parts.append("The story so far, scene by scene:")
        parts += [f"{i}. {s.strip()}" for i, s in enumerate(inp.summaries, 1)]
    if inp.memories:  # story memory: earlier scenes recalled as relevant to this direction
        parts.append("Earlier scenes that matter now:")
        parts += [f"- {m.strip()}" for m in inp.memories]
    if inp.characters:
        parts.append("Characters already met (keep their looks exactly as given):")
        parts += _looks(inp.characters)
    parts.append(f"What happens in this scene: {inp.direction.strip()}")
    if inp.style.strip():
        parts.append(f"Style: {inp.style.strip()}")
    parts.append(
        "Write the scene as 300 to 600 words of vivid prose. Put a short title on the first "
        "line, then a blank line, then the scene. No notes or commentary."
    )
    return "\n".join(parts)


def summary_prompt(text: str) -> str:
    return (
        "Summarise this scene in two sentences, naming the characters and what changed. "
        "Answer with the two sentences only.\n\n" + text
    )


def cast_prompt(inp: ExtractCastInput) -> str:
    instructions = (
        "Read the scene below. List every character who appears in it, by the name the text "
        "uses, with a short description of how they look (face, build, clothes). Describe the "
        "setting in one phrase, and write one visual prompt for an illustration of the scene. "
        "Answer in JSON."
    )
    parts = [instructions]
    if inp.known_characters:
        parts.append("Known characters and their canonical looks (reuse these looks):")
        parts += _looks(inp.known_characters)
    parts.append("Scene:\n" + inp.text)
    return "\n".join(parts)


def _looks(characters: list[CharacterLook]) -> list[str]:
    return [f"- {c.name}: {c.look.strip()}" for c in characters]


def split_title(answer: str) -> tuple[str, str]:
    """(title, body): the first line when it looks like a title, else the first words."""
    text = answer.strip()
    first, _, rest = text.partition("\n")
    candidate = re.sub(r"^(#+\s*|\*+|title\s*:\s*)", "", first.strip(), flags=re.IGNORECASE)
    candidate = candidate.strip("*\"' ")
    words = candidate.split()
    if rest.strip() and 0 < len(words) <= 12 and len(candidate) <= 100 and not candidate.endswith(
        (".", ",", ";")
    ):
        return candidate, rest.strip()
    opening = " ".join(text.split()[:6]).rstrip(".,;:!?")
    return (opening + "…" if opening else "Untitled"), text


def first_sentences(text: str, n: int = 2, max_chars: int = 600) -> str:
    sentences = [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]
    return " ".join(sentences[:n])[:max_chars]
