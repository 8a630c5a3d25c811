"""Deterministic pseudo-prose for the emulator: hash-seeded sentences about the prompt, as tokens."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["count_tokens", "proper_nouns", "prose_sentences", "prose_tokens", "seed_of", "split_tokens", "topic_words"]

_COMMON_TEXT = """
a an the and or but if then when while as at by for from in into of on onto to with without
he she it they we you i me him her them us his hers its their our your my this that these those
there here what which who whom whose where why how not no yes all any each every some many much
more most other such only own same so than too very can will just should would could may might
must shall be is am are was were been being have has had do does did done say said says one two
after before again once also still yet now ever never about above below over under between
write scene story return answer list describe give use keep make reply json title summary text
premise direction style characters character setting name look visual prompt earlier known
"""
_COMMON = set(_COMMON_TEXT.split())

_OPENERS = ["The", "Somewhere", "Beyond the", "At dusk the", "Slowly the", "Later the",
            "Without a word the", "For a moment the", "Above them the", "Near the"]
_NOUNS = ["wind", "lantern", "harbor", "road", "door", "river", "voice", "shadow", "window",
          "garden", "stair", "bell", "map", "letter", "fire", "tide", "forest", "tower", "bridge",
          "crowd", "storm", "candle", "mirror", "path", "sky", "stone", "dream", "song"]
_VERBS = ["drifted", "waited", "answered", "turned", "whispered", "gathered", "opened", "fell",
          "carried", "remembered", "followed", "glowed", "trembled", "settled", "listened", "rose"]
_ADJS = ["quiet", "silver", "old", "bright", "hollow", "distant", "warm", "broken", "narrow",
         "restless", "golden", "pale", "hidden", "gentle", "strange", "heavy"]
_LINKS = ["and", "while", "as", "until", "because", "though"]
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_TOKEN = re.compile(r"\s*\S{1,7}|\s+")


def seed_of(*parts: Any) -> int:
    """A stable 64-bit seed from JSON-able parts (same input, same text, every run)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def proper_nouns(text: str, limit: int = 8) -> list[str]:
    """Capitalised words used mid-sentence (names), in order of first appearance."""
    found: list[str] = []
    for m in _WORD.finditer(text):
        word = m.group(0).strip("'-")
        if len(word) < 2 or not word[0].isupper() or word.isupper():
            continue
        before = text[: m.start()].rstrip()
        if not before or before[-1] in ".!?:\n\"" or word.lower() in _COMMON:
            continue
        if word not in found:
            found.append(word)
        if len(found) >= limit:
            break
    return found


def topic_words(text: str, limit: int = 40) -> list[str]:
    """Content words of the prompt (names keep their capital), so the answer is about it."""
    names = proper_nouns(text, limit=100)
    out: list[str] = list(names[:limit])  # names first: the answer is about its people
    for m in _WORD.finditer(text):
        word = m.group(0).strip("'-")
        if len(word) < 4 or word.lower() in _COMMON or word.isupper():
            continue
        word = word if word in names else word.lower()
        if word not in out:
            out.append(word)
        if len(out) >= limit:
            break
    return out


def _sentence(rng: random.Random, topic: list[str]) -> str:
    def noun() -> str:
        draw = rng.random()
        if topic and draw < 0.2:
            return topic[rng.randrange(min(len(topic), 4))]  # the leading names and words
        if topic and draw < 0.5:
            return rng.choice(topic)
        return rng.choice(_NOUNS)

    words = [rng.choice(_OPENERS), rng.choice(_ADJS), noun(), rng.choice(_VERBS)]
    if rng.random() < 0.7:
        words += [rng.choice(_LINKS), "the", rng.choice(_ADJS), noun(), rng.choice(_VERBS)]
    if rng.random() < 0.6:
        words += ["near", "the", noun()]
    return " ".join(words) + "."


def _title(rng: random.Random, topic: list[str]) -> str:
    picked = [w for w in topic[:6]] or list(_NOUNS[:3])
    rng.shuffle(picked)
    return "The " + " ".join(w.capitalize() for w in picked[: rng.randint(1, 3)])


def split_tokens(text: str) -> list[str]:
    """The pseudo-tokenizer: a word with its leading space, long words cut every 7 chars."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def prose_sentences(seed: int, prompt: str) -> Iterator[list[str]]:
    """An endless, deterministic stream of prose about ``prompt``, one token list per sentence.

    Sentences come from a per-request pool once it has 48 entries, so very long answers (the
    10 MB tests) cost one random draw per sentence and no memory beyond the pool.
    """
    rng = random.Random(seed)
    topic = topic_words(prompt)
    if "title" in prompt.lower():
        yield split_tokens(_title(rng, topic) + "\n\n")
    pool: list[str] = []
    cache: dict[tuple[int, str], list[str]] = {}
    count = 0
    while True:
        if len(pool) < 48:
            index = len(pool)
            pool.append(_sentence(rng, topic))
        else:
            index = rng.randrange(len(pool))
        count += 1
        sep = "\n\n" if count % rng.randint(4, 6) == 0 else " "
        key = (index, sep)
        if key not in cache:
            cache[key] = split_tokens(pool[index] + sep)
        yield cache[key]


def prose_tokens(seed: int, prompt: str) -> Iterator[str]:
    """The same prose as ``prose_sentences``, token by token."""
    for sentence in prose_sentences(seed, prompt):
        yield from sentence
