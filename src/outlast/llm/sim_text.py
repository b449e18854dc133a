"""What the LLM simulator says: prose-like text, or JSON shaped like the schema a call asks for.

Everything is derived from a hash of (seed, model, messages), so one prompt always gets the same
answer and tests can know it.

**Prose.** 16–64 words in sentences, built from the prompt's own salient phrases (its most
repeated runs of content words, in its user messages) and a small stock of templates, so a
section written "about durable workflows" talks about durable workflows.

**Structured output.** When a call asks for JSON matching a schema — OpenAI ``response_format``
``{"type": "json_schema", "json_schema": {"schema": ...}}``, or a system message that carries
``JSON Schema: {...}`` (how :mod:`outlast.llm.structured` asks both OpenAI JSON mode and
Anthropic) — the reply is one compact JSON object that validates against that schema
(``$ref``/``$defs``, ``anyOf``, objects, arrays, strings, enums, numbers, booleans).

Values are *extracted* from labelled lines of the user messages where there are any, the way a
model reads facts off a page: a line ``Products: Anvil, Rocket Skates.`` fills a property named
``products`` (labels match property names or titles case-insensitively, ``_``/``-`` read as
spaces, singular or plural). Array items are separated by ``;`` when the line has one, else by
``,``; an item ``Ada Lovelace (CTO)`` fills an object's first two properties in schema order; a
number property takes the first number of its text (``$49/month`` → 49). Every matching line
contributes, in order, without duplicates — so a merge prompt that lists many pages' facts gets
their union. An optional property with no labelled line keeps its schema ``default`` (or is
left out, so the model's own default applies: a page that says nothing about pricing has no
pricing), and a required one gets a generated value: a short title-case phrase for
``title``/``name``/``heading``-like names, a prose sentence for other strings, 3 items (within
``minItems``/``maxItems``) for arrays.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from typing import Any

__all__ = ["find_schema", "prose_words", "structured_reply"]

MIN_WORDS, MAX_WORDS = 16, 64

_STOP = frozenset(
    re.findall(
        r"\S+",
        """
    a about above after again all also an and any are as at be been before being below between both but
    by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my no nor not now of off on once
    only or other our ours out over own same she should so some such than that the their them then there
    these they this those through to too under until up very was we were what when where which while who
    whom why will with would you your reply json object schema write post section sections words
    paragraph outline please using use must following given page text list return answer short brief
    into draft blog article topic note notes keeps makes depends matters shows turns works needs
    helps gives takes builds cover covers plan plans give search queries research reviewer request
    final title standfirst editor even best keep stop look expect every
""",
    )
)
_OPENERS = (
    "In practice,", "Put simply,", "For most teams,", "Seen from the outside,", "Over time,",
    "At its core,", "In the end,", "Day to day,",
)  # fmt: skip
_TEMPLATES = (
    "{A} shapes how {b} behaves under load.",
    "{A} and {b} work best when each step can be replayed.",
    "teams that adopt {a} spend less time chasing {b}.",
    "{A} turns {b} into something you can reason about.",
    "a careful look at {a} shows why {b} matters.",
    "{A} keeps {b} predictable even when a process dies halfway.",
    "the real cost of {a} is hidden in {b}.",
    "{A} rewards patience with {b} that simply keeps going.",
    "good defaults for {a} make {b} boring, and boring is good.",
    "{A} depends on {b} more than most people expect.",
)
_FILLER = (
    "reliable systems",
    "long-running work",
    "everyday operations",
    "the whole pipeline",
    "each request",
)
# The templates' own words are never salient: generated text fed back into a later prompt (a
# draft handed to an editor) must not make the simulator talk about its own filler.
_STOP = _STOP | {w.lower() for w in re.findall(r"[A-Za-z]+", " ".join((*_TEMPLATES, *_OPENERS, *_FILLER)))}
_NAMEY = re.compile(r"(^|_)(title|name|heading|headline|label|query|queries|keyword|tag)s?($|_)")
_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 _/-]{0,40}?)\s*:\s*(\S.*?)\s*$")
_MARKER = re.compile(r"JSON Schema:?\s*")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def _rng(seed: int, model: str, messages: list[dict[str, Any]], salt: str = "") -> random.Random:
    blob = json.dumps([seed, model, messages, salt], sort_keys=True, separators=(",", ":"), default=str)
    return random.Random(hashlib.sha256(blob.encode()).digest())


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_text(m) for m in messages if m.get("role") == "user")


def salient_phrases(text: str, n: int = 12) -> list[str]:
    """The prompt's most telling phrases: runs of up to 3 content words ("durable workflows",
    "AI agents"), the most repeated first, then the longest, then the first seen."""
    phrases: list[str] = []
    run: list[str] = []
    for token in [*re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[^\sA-Za-z]", text), "."]:
        keep = token.isalpha() and (
            (len(token) >= 4 and token.lower() not in _STOP) or (token.isupper() and len(token) >= 2)
        )
        if keep:
            run.append(token if token.isupper() else token.lower())
            continue
        if run:
            phrases.append(" ".join(run[-3:]))
        run = []
    counts = Counter(phrases)
    head = set(salient_phrases(text[:160], n) if len(text) > 160 else ())
    for phrase in head & counts.keys():  # the opening (instruction, topic) says what it is about
        counts[phrase] += 3
    first = {p: i for i, p in reversed(list(enumerate(phrases)))}
    return sorted(counts, key=lambda p: (-counts[p], -min(len(p.split()), 2), first[p]))[:n]


def _phrase(rng: random.Random, phrases: list[str]) -> str:
    return rng.choice(phrases) if phrases else rng.choice(_FILLER)


def _sentence(rng: random.Random, phrases: list[str]) -> str:
    a = _phrase(rng, phrases)
    b = _phrase(rng, [p for p in phrases if p != a] or list(_FILLER))
    text = rng.choice(_TEMPLATES).format(A=a[:1].upper() + a[1:], a=a, b=b)
    if rng.random() < 0.35:
        lower = text[:2] != text[:2].upper()  # "The …" reads "the …" after an opener; "AI …" stays
        text = f"{rng.choice(_OPENERS)} {text[:1].lower() + text[1:] if lower else text}"
    return text[:1].upper() + text[1:]


def _title(rng: random.Random, phrases: list[str]) -> str:
    first = _phrase(rng, phrases)
    words = first.split()
    if len(words) < 3 and len(phrases) > 1 and rng.random() < 0.6:
        words += [rng.choice([":", "and", "for"]), *_phrase(rng, [p for p in phrases if p != first]).split()]
    text = " ".join(w if w.isupper() or w in ("and", "for") else w.capitalize() for w in words)
    return text.replace(" : ", ": ")


def prose_words(seed: int, model: str, messages: list[dict[str, Any]]) -> list[str]:
    """16–64 words of sentences about the prompt (the last one may be cut short)."""
    rng = _rng(seed, model, messages)
    words = salient_phrases(_user_text(messages)) or salient_phrases(" ".join(_text(m) for m in messages))
    target = rng.randint(MIN_WORDS, MAX_WORDS)
    out: list[str] = []
    while len(out) < target:
        out.extend(_sentence(rng, words).split())
    out = out[:MAX_WORDS]
    if not out[-1].endswith("."):
        out[-1] = out[-1].rstrip(",;") + "."
    return out


# --------------------------------------------------------------------------- structured output


def find_schema(
    messages: list[dict[str, Any]], response_format: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The JSON Schema a call asks its reply to match, or None for a free-text call."""
    if response_format and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {"type": "object"}
    for message in messages:
        if message.get("role") != "system":
            continue
        text = _text(message)
        found = _MARKER.search(text)
        if found is None:
            continue
        try:
            schema, _ = json.JSONDecoder().raw_decode(text, found.end())
        except ValueError:
            continue
        if isinstance(schema, dict):
            return schema
    return None


def _norm(label: str) -> str:
    label = re.sub(r"[\s_/-]+", " ", label.strip().lower())
    return label[:-1] if label.endswith("s") and len(label) > 3 else label


def labelled_facts(text: str) -> dict[str, list[str]]:
    """``Label: value`` lines, by normalised label, every value in order of appearance."""
    facts: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and not match.group(2).startswith("//"):  # not a URL's scheme
            facts.setdefault(_norm(match.group(1)), []).append(match.group(2).rstrip(". "))
    return facts


class _Filler:
    def __init__(
        self, schema: dict[str, Any], rng: random.Random, facts: dict[str, list[str]], words: list[str]
    ):
        self.defs = {**schema.get("$defs", {}), **schema.get("definitions", {})}
        self.rng, self.facts, self.words = rng, facts, words

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        for key in ("anyOf", "oneOf", "allOf"):
            options = [s for s in schema.get(key, []) if s.get("type") != "null"]
            if options:
                return self.resolve(options[0])
        return schema

    def lookup(self, name: str, schema: dict[str, Any]) -> list[str] | None:
        for label in (name, str(schema.get("title", ""))):
            if label and _norm(label) in self.facts:
                return self.facts[_norm(label)]
        return None

    def value(self, schema: dict[str, Any], name: str = "") -> Any:
        schema = self.resolve(schema)
        kind = schema.get("type")
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if kind == "object" or "properties" in schema:
            return self.obj(schema)
        if kind == "array":
            return self.array(schema, name)
        found = self.lookup(name, schema) if name else None
        if found:
            return self.scalar(schema, found[0], name)
        return self.generate(schema, name)

    def obj(self, schema: dict[str, Any]) -> dict[str, Any]:
        required = set(schema.get("required", []))
        out: dict[str, Any] = {}
        for key, sub in schema.get("properties", {}).items():
            if key not in required and self.lookup(key, sub) is None:
                if "default" in sub:  # nothing in the prompt about it: leave it at its default
                    out[key] = sub["default"]
            else:
                out[key] = self.value(sub, key)
        return out

    def array(self, schema: dict[str, Any], name: str) -> list[Any]:
        item = self.resolve(schema.get("items", {}))
        found = self.lookup(name, schema)
        if found is not None:
            out: list[Any] = []
            for line in found:
                for part in line.split(";") if ";" in line else line.split(","):
                    part = part.strip().rstrip(".")
                    value = self.item(item, part) if part else None
                    if value is not None and value not in out:
                        out.append(value)
            return out
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        return [self.value(item, name.rstrip("s")) for _ in range(max(low, min(3, high)))]

    def item(self, schema: dict[str, Any], text: str) -> Any:
        if schema.get("type") == "object" or "properties" in schema:
            props = list(schema.get("properties", {}).items())
            match = re.fullmatch(r"(.*?)\s*\((.*)\)", text)
            parts = [match.group(1), match.group(2)] if match else [text]
            value = self.obj(schema)
            for (key, sub), part in zip(props, parts, strict=False):
                value[key] = self.scalar(self.resolve(sub), part, key)
            return value
        return self.scalar(schema, text, "")

    def scalar(self, schema: dict[str, Any], text: str, name: str) -> Any:
        kind = schema.get("type")
        if kind in ("integer", "number"):
            found = _NUMBER.search(text)
            if found is None:
                return self.generate(schema, name)
            number = float(found.group().replace(",", ""))
            return int(number) if kind == "integer" else number
        if kind == "boolean":
            return text.strip().lower() in ("yes", "true", "1")
        return text

    def generate(self, schema: dict[str, Any], name: str) -> Any:
        kind = schema.get("type")
        if kind == "integer":
            return self.rng.randint(int(schema.get("minimum", 1)), int(schema.get("maximum", 10)))
        if kind == "number":
            return round(
                self.rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 10))), 2
            )
        if kind == "boolean":
            return True
        if _NAMEY.search(name.lower()):
            if "quer" in name or "keyword" in name:
                return _phrase(self.rng, self.words)
            return _title(self.rng, self.words)
        sentence = _sentence(self.rng, self.words)
        limit = schema.get("maxLength")
        return sentence[: int(limit)] if limit else sentence


def structured_reply(seed: int, model: str, messages: list[dict[str, Any]], schema: dict[str, Any]) -> str:
    """A compact JSON object that validates against ``schema``, facts taken from the prompt."""
    text = _user_text(messages)
    filler = _Filler(schema, _rng(seed, model, messages, "json"), labelled_facts(text), salient_phrases(text))
    value = filler.value(schema)
    if not isinstance(value, dict):
        value = {"value": value}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
