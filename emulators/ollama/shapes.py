"""Structured output and embeddings for the emulator: schema-valid JSON and hashed vectors."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from typing import Any

from emulators.ollama.prose import cast_of, proper_nouns, sentence, topic_words

__all__ = ["embedding", "fill_schema", "format_error", "wrap_structured"]

_LOOKS = ["tall", "wiry", "freckled", "grey-eyed", "weathered", "young", "stooped", "bright-eyed"]
_WEAR = ["a long green coat", "a patched wool cloak", "a red scarf", "brass spectacles",
         "a salt-stained jacket", "a silver pendant", "muddy boots", "a wide-brimmed hat"]


def format_error(fmt: Any) -> str | None:
    """None when ``format`` is usable (unset, "json" or a schema object); else the 500 text."""
    if fmt is None or fmt == "" or fmt == "json" or isinstance(fmt, dict):
        return None
    raw = json.dumps(fmt, separators=(",", ":"))
    return f'invalid format: "{raw}": expected "json" or a valid JSON Schema object'


class _Filler:
    def __init__(self, seed: int, prompt: str, root: dict[str, Any]) -> None:
        self.rng = random.Random(seed)
        self.prompt = prompt
        self.names = proper_nouns(prompt)
        # Without names in the prompt, its people are the cast ("Keeper", "Fox").
        self.people = self.names or [p.capitalize() for p in cast_of(prompt)]
        self.topic = topic_words(prompt) or ["harbor", "lantern", "road"]
        self.root = root
        self.used_names = 0

    def resolve(self, schema: Any) -> dict[str, Any]:
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            return self.resolve(node)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                usable = [o for o in options if self.resolve(o).get("type") != "null"]
                return self.resolve((usable or options)[0])
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part))
            return merged
        return schema

    def phrase(self) -> str:
        """A whole sentence about the prompt (never a run of random words)."""
        return sentence(self.rng.getrandbits(64), self.prompt)

    def string(self, key: str, schema: dict[str, Any]) -> str:
        if key == "name" and self.people:
            value = self.people[self.used_names % len(self.people)]
            self.used_names += 1
        elif key in ("look", "appearance", "description"):
            value = f"{self.rng.choice(_LOOKS)}, wearing {self.rng.choice(_WEAR)}"
        elif key in ("setting", "place", "location"):
            value = f"the {self.rng.choice(self.topic[-4:] if self.topic else ['harbor'])}"
        else:
            value = self.phrase()
        min_len = int(schema.get("minLength", 0))
        max_len = schema.get("maxLength")
        value = value.ljust(min_len, ".")
        return value[: int(max_len)] if isinstance(max_len, int) else value

    def number(self, schema: dict[str, Any], integer: bool) -> int | float:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 100))
        if integer:
            return self.rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
        return round(self.rng.uniform(low, high), 3)

    def value(self, schema_in: Any, key: str = "") -> Any:
        schema = self.resolve(schema_in)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            props = schema.get("properties", {})
            return {k: self.value(v, k) for k, v in props.items()} if isinstance(props, dict) else {}
        if kind == "array":
            return self.array(schema)
        if kind == "integer":
            return self.number(schema, True)
        if kind == "number":
            return self.number(schema, False)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(key, schema)

    def array(self, schema: dict[str, Any]) -> list[Any]:
        items = self.resolve(schema.get("items", {}))
        props = items.get("properties", {}) if isinstance(items, dict) else {}
        named = isinstance(props, dict) and "name" in props
        count = len(self.people) if named and self.people else self.rng.randint(1, 3)
        count = max(int(schema.get("minItems", 0)), count)
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        self.used_names = 0
        return [self.value(items) for _ in range(count)]


def fill_schema(seed: int, prompt: str, fmt: Any) -> Any:
    """A value satisfying ``fmt`` (a JSON schema, or "json" for any object), about the prompt.

    Properties called ``name`` inside arrays of objects get the prompt's proper nouns.
    """
    if isinstance(fmt, dict):
        return _Filler(seed, prompt, fmt).value(fmt)
    filler = _Filler(seed, prompt, {})
    return {"answer": filler.phrase(), "names": filler.names}


def wrap_structured(value: str, how: str | None) -> str:
    """A structured answer as small models write it (the ``structured_wrap`` fault): in a
    ```json fence, as a JSON string, after a sentence, or as two objects in prose."""
    if how == "fence":
        return "```json\n" + value + "\n```"
    if how == "string":
        return json.dumps(value, ensure_ascii=False)
    if how == "prose":
        return "Here is the JSON you asked for:\n" + value
    if how == "two_objects":
        return "First try: " + value + "\nBetter: " + value
    return value


_FEATURE = re.compile(r"[a-z0-9]+")


def embedding(model: str, text: str, dim: int, *, normalise: bool) -> list[float]:
    """Hashed bag of words and character trigrams: similar texts give similar vectors."""
    vec = [0.0] * dim
    words = _FEATURE.findall(text.lower()) or ["<empty>"]
    features: list[tuple[str, float]] = [(f"w:{w}", 2.0) for w in words]
    for w in words:
        padded = f"#{w}#"
        features += [(f"t:{padded[i:i + 3]}", 1.0) for i in range(len(padded) - 2)]
    for feature, weight in features:
        digest = hashlib.blake2b(f"{model}|{feature}".encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "big") % dim
        sign = 1.0 if digest[4] & 1 else -1.0
        vec[index] += sign * weight
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    if normalise:
        return [v / norm for v in vec]
    return [v / 10.0 for v in vec]
