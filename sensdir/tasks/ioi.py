"""IOI prompts (indirect object identification, Wang et al. 2022): the one set of names,
places, objects and templates that the embedded model was trained on (its training sentences,
:mod:`sensdir.embedded.tasks`) and that the supervised-dictionary study ([M24], METHODS §7) and
the ``supervised`` direction type evaluate with, plus templates written for GPT-2 small.

It lives outside both the embedded package and the plugins because both sides need the same
lists: the shipped weights were trained on exactly these sentences.

Two sources of sentences:

* ``embedded``: the embedded model's names, places, objects and (by default) its training
  templates (:data:`TRAIN_TEMPLATES`; :data:`HELDOUT_TEMPLATES` never occur in training).
* ``gpt2``: IOI templates for GPT-2 small in the style of the IOI paper: two names are
  introduced, one of them (the subject ``s``) is repeated, and the prompt stops right before the
  other one (the indirect object ``io``). Names are common first names, meant to be one GPT-2
  token with a leading space; a name that is not is scored by its first token (as on small test
  tokenizers).

Every prompt is an :class:`IOIExample` (``io``, ``s``, ``io_pos``: 0 for pattern ABB, i.e. IO
introduced first; 1 for BAB), so the study and the direction type read the attributes by name
whatever the source. The templates, names and word lists are written for this project.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

NAMES: tuple[str, ...] = (
    "Mary",
    "John",
    "Tom",
    "James",
    "Anna",
    "Paul",
    "Sarah",
    "David",
    "Emma",
    "Mark",
    "Laura",
    "Peter",
    "Kate",
    "Michael",
    "Lisa",
    "Daniel",
    "Alice",
    "Robert",
    "Jane",
    "George",
    "Susan",
    "Henry",
    "Grace",
    "Frank",
    "Helen",
    "Jack",
    "Ruth",
    "Martin",
    "Amy",
    "Simon",
    "Rose",
    "Adam",
    "Claire",
    "Eric",
    "Julia",
    "Ben",
    "Lucy",
    "Sam",
    "Nancy",
    "Carl",
    "Diana",
    "Kevin",
    "Fred",
    "Ellen",
    "Victor",
    "Joan",
    "Oscar",
    "Irene",
    "Tim",
    "Sophie",
)

PLACES: tuple[str, ...] = (
    "store",
    "park",
    "school",
    "office",
    "station",
    "garden",
    "market",
    "library",
    "hospital",
    "beach",
    "restaurant",
    "house",
    "museum",
    "church",
    "bank",
    "river",
)

OBJECTS: tuple[str, ...] = (
    "drink",
    "book",
    "ball",
    "key",
    "letter",
    "ring",
    "bag",
    "pen",
    "cake",
    "gift",
    "phone",
    "map",
    "box",
    "coin",
    "hat",
    "ticket",
)

# {A} and {B} are the two names introduced first, {S} is the repeated subject; the prompt ends
# right before the indirect object.
TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {place}, {S} gave the {object} to",
    "After {A} and {B} arrived at the {place}, {S} handed the {object} to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "Then, {A} and {B} had a long argument at the {place}. Afterwards {S} said goodbye to",
    "Friends {A} and {B} found a {object} at the {place}. {S} gave it to",
    "{A} and {B} went to the {place} together. {S} passed the {object} to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
    "The {place} was quiet when {A} and {B} came in. {S} showed the {object} to",
    "After lunch, {A} and {B} went to the {place}. {S} brought the {object} to",
    "{A} and {B} were cleaning the {place}. Later, {S} threw the {object} to",
    "On Monday, {A} and {B} visited the {place}, and {S} sent a {object} to",
    "When {A} and {B} met at the {place}, {S} offered the {object} to",
    "Since {A} and {B} were both at the {place}, {S} lent the {object} to",
    "Yesterday {A} and {B} walked into the {place}, where {S} gave a {object} to",
)
HELDOUT_TEMPLATES: frozenset[int] = frozenset({11, 12, 13})
TRAIN_TEMPLATES: tuple[int, ...] = tuple(i for i in range(len(TEMPLATES)) if i not in HELDOUT_TEMPLATES)


@dataclass(frozen=True)
class IOIExample:
    prompt: str
    answer: str  # " " + io
    io: str
    s: str
    io_pos: int  # 0: IO introduced first (ABB), 1: IO introduced second (BAB)
    pattern: str  # "ABB" or "BAB"
    template: int
    place: str
    object: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer

    @property
    def s_answer(self) -> str:
        return " " + self.s

    def to_dict(self) -> dict:
        return asdict(self)


# {A}, {B}: the names in order of introduction; {S}: the repeated subject; {place}, {object}.
GPT2_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} walked into the {place}, {S} handed a {object} to",
    "After {A} and {B} came back from the {place}, {S} passed the {object} to",
    "While {A} and {B} were waiting at the {place}, {S} gave a {object} to",
    "Later that day, {A} and {B} stopped by the {place}, and {S} offered the {object} to",
    "{A} and {B} spent the morning at the {place}. {S} gave the {object} to",
    "Once {A} and {B} had reached the {place}, {S} threw a {object} to",
    "At the {place}, {A} and {B} were talking for hours. Then {S} showed the {object} to",
    "The day {A} and {B} visited the {place}, {S} brought a {object} to",
)

# single GPT-2 tokens (with a leading space): the embedded names less the ones GPT-2 splits,
# plus "Joe"; the order is the one the GPT-2 prompts were drawn with
GPT2_NAMES: tuple[str, ...] = tuple(
    n for n in NAMES if n not in ("Claire", "Carl", "Diana", "Fred", "Ellen", "Victor", "Joan", "Oscar", "Irene", "Tim", "Sophie")
) + ("Joe",)

# The GPT-2 places are the embedded ones with a more common last word; the objects are the same.
GPT2_PLACES: tuple[str, ...] = PLACES[:-1] + ("airport",)
GPT2_OBJECTS: tuple[str, ...] = OBJECTS

SOURCES = ("embedded", "gpt2")
ATTRIBUTES = ("io", "s", "io_pos")


@dataclass(frozen=True)
class IOISource:
    """What prompts are drawn from: templates (format strings) and the word lists."""

    templates: tuple[str, ...]
    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]


def ioi_source(
    name: str, templates: Sequence[int] = (), custom_templates: Sequence[str] = (), names: Sequence[str] = ()
) -> IOISource:
    """The source ``name`` (``embedded`` or ``gpt2``), restricted to the template indices
    ``templates`` (default: the embedded model's training templates, or all GPT-2 ones);
    ``custom_templates`` and ``names`` replace the templates and names outright (tests, small
    tokenizers)."""
    if name == "embedded":
        all_t, default = TEMPLATES, TRAIN_TEMPLATES
        src = IOISource((), NAMES, PLACES, OBJECTS)
    elif name == "gpt2":
        all_t, default = GPT2_TEMPLATES, tuple(range(len(GPT2_TEMPLATES)))
        src = IOISource((), GPT2_NAMES, GPT2_PLACES, GPT2_OBJECTS)
    else:
        raise ValueError(f"IOI prompt source {name!r} is unknown; valid choices: {', '.join(SOURCES)}")
    if custom_templates:
        chosen = tuple(custom_templates)
    else:
        idx = tuple(templates) or default
        bad = [i for i in idx if not 0 <= i < len(all_t)]
        if bad:
            raise ValueError(f"template indices {bad} are outside 0..{len(all_t) - 1} of the {name} templates")
        chosen = tuple(all_t[i] for i in idx)
    for t in chosen:
        if "{A}" not in t or "{B}" not in t or "{S}" not in t:
            raise ValueError(f"IOI template {t!r} lacks one of {{A}}, {{B}}, {{S}}")
    nm = tuple(names) or src.names
    if len(set(nm)) < 3:
        raise ValueError("IOI prompts need at least 3 distinct names (edits swap a name for another one)")
    return IOISource(chosen, nm, src.places, src.objects)


def make_prompt(src: IOISource, io: str, s: str, io_pos: int, template: int, place: str, obj: str) -> IOIExample:
    a, b = (io, s) if io_pos == 0 else (s, io)
    prompt = src.templates[template].format(A=a, B=b, S=s, place=place, object=obj)
    return IOIExample(
        prompt=prompt,
        answer=" " + io,
        io=io,
        s=s,
        io_pos=io_pos,
        pattern="ABB" if io_pos == 0 else "BAB",
        template=template,
        place=place,
        object=obj,
    )


def sample_prompts(src: IOISource, n: int, seed: int) -> list[IOIExample]:
    """``n`` prompts: name pair, pattern, template, place and object drawn uniformly."""
    rng = random.Random(f"ioi-supervised:{seed}")
    out = []
    for _ in range(n):
        io, s = rng.sample(src.names, 2)
        out.append(
            make_prompt(
                src, io, s, rng.randrange(2), rng.randrange(len(src.templates)), rng.choice(src.places), rng.choice(src.objects)
            )
        )
    return out


def counterfactual(src: IOISource, ex: IOIExample, attribute: str, value) -> IOIExample:
    """``ex`` with one attribute changed to ``value`` (the rest of the sentence kept)."""
    fields: dict[str, Any] = dict(io=ex.io, s=ex.s, io_pos=ex.io_pos, template=ex.template, place=ex.place, obj=ex.object)
    if attribute not in ATTRIBUTES:
        raise ValueError(f"IOI attribute {attribute!r} is unknown; valid choices: {', '.join(ATTRIBUTES)}")
    fields[attribute] = int(value) if attribute == "io_pos" else str(value)
    if fields["io"] == fields["s"]:
        raise ValueError(f"counterfactual {attribute}={value!r} makes IO and S the same name")
    return make_prompt(src, **fields)


def other_value(src: IOISource, ex: IOIExample, attribute: str, rng: random.Random) -> str:
    """A value of ``attribute`` other than ``ex``'s that keeps the prompt valid (IO != S)."""
    if attribute == "io_pos":
        return str(1 - ex.io_pos)
    taken = {ex.io, ex.s}
    return rng.choice([n for n in src.names if n not in taken])


def attribute_value(ex: IOIExample, attribute: str) -> str:
    """The value of ``attribute`` as a string (dictionary keys; ``io_pos`` is "0" or "1")."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"IOI attribute {attribute!r} is unknown; valid choices: {', '.join(ATTRIBUTES)}")
    return str(getattr(ex, attribute))


def attribute_values(src: IOISource, attribute: str) -> list[str]:
    """Every value ``attribute`` can take under ``src``."""
    if attribute == "io_pos":
        return ["0", "1"]
    if attribute in ("io", "s"):
        return list(src.names)
    raise ValueError(f"IOI attribute {attribute!r} is unknown; valid choices: {', '.join(ATTRIBUTES)}")


def pair_split(examples: Sequence[IOIExample], test_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices, split by unordered name pair (a hash of the pair and the seed),
    so that no test prompt shares its two names with a training prompt."""
    train: list = []
    test: list = []
    for i, ex in enumerate(examples):
        x, y = sorted((ex.io, ex.s))
        h = int.from_bytes(hashlib.sha256(f"{seed}:{x}:{y}".encode()).digest()[:8], "big") / 2**64
        (test if h < test_frac else train).append(i)
    return train, test


def resolve_source(name: str, model) -> str:
    """``auto``: ``gpt2`` for a GPT-2 model (transformer_lens ``model_name`` gpt2*), else
    ``embedded``; any other value is returned as is."""
    if name != "auto":
        return name
    model_name = str(getattr(getattr(model, "cfg", None), "model_name", "") or "")
    return "gpt2" if model_name.lower().startswith("gpt2") else "embedded"
