"""The offline default task: instructions with machine-checkable constraints, made from a seed.

Each record is a task on a topic ("Describe a city at night.") plus one or two constraints
("Answer in fewer than 25 words.", "Do not use any commas.") stored as data, so the rules oracle
can verify them. The same seed always gives the same records in the same order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dno.data import Prompt
from dno.data.constraints import describe

TASKS = [
    "Describe {topic}.",
    "Explain why {topic} matters to people.",
    "Give advice to someone interested in {topic}.",
    "Write a short poem about {topic}.",
    "Tell a very short story about {topic}.",
    "Summarize what people enjoy about {topic}.",
    "Write a short note to a friend about {topic}.",
    "Share an interesting fact about {topic}.",
]

# (phrase used in the instruction, words whose presence makes a response on topic)
TOPICS = [
    ("a city at night", ["city", "cities", "night", "street", "lights"]),
    ("the ocean", ["ocean", "sea", "wave", "waves"]),
    ("coffee", ["coffee", "espresso", "caffeine"]),
    ("autumn leaves", ["autumn", "leaf", "leaves", "fall"]),
    ("a rainy day", ["rain", "rainy", "raining"]),
    ("mountain hiking", ["mountain", "hike", "hiking", "trail"]),
    ("learning to cook", ["cook", "cooking", "recipe", "kitchen"]),
    ("a public library", ["library", "libraries", "book", "books"]),
    ("electric cars", ["electric", "car", "cars", "vehicle"]),
    ("a busy train station", ["train", "station", "platform"]),
    ("honey bees", ["bee", "bees", "honey", "hive"]),
    ("the moon", ["moon", "lunar"]),
    ("winter mornings", ["winter", "morning", "cold", "snow"]),
    ("a small garden", ["garden", "plant", "plants", "flowers"]),
    ("the game of chess", ["chess", "pawn", "king", "queen", "board"]),
    ("a desert", ["desert", "sand", "dune", "dunes"]),
    ("friendship", ["friend", "friends", "friendship"]),
    ("music festivals", ["music", "festival", "festivals", "concert"]),
    ("recycling", ["recycle", "recycling", "waste", "plastic"]),
    ("a good night's sleep", ["sleep", "rest", "bed", "dream"]),
    ("volcanoes", ["volcano", "volcanoes", "lava", "eruption"]),
    ("the internet", ["internet", "online", "web"]),
    ("baking bread", ["bread", "bake", "baking", "dough"]),
    ("a snowstorm", ["snow", "storm", "snowstorm", "blizzard"]),
    ("old bridges", ["bridge", "bridges"]),
    ("green tea", ["tea"]),
    ("riding a bicycle", ["bicycle", "bike", "cycling", "ride"]),
    ("a quiet forest", ["forest", "tree", "trees", "woods"]),
    ("birds in spring", ["bird", "birds", "spring"]),
    ("solar power", ["solar", "sun", "energy", "power"]),
    ("a farmers market", ["market", "farmer", "farmers", "vegetables"]),
    ("museums", ["museum", "museums", "art", "exhibit"]),
    ("cats", ["cat", "cats", "kitten"]),
    ("dogs", ["dog", "dogs", "puppy"]),
    ("rivers", ["river", "rivers", "water", "stream"]),
    ("lighthouses", ["lighthouse", "lighthouses", "light"]),
    ("long train journeys", ["train", "journey", "travel"]),
    ("old clocks", ["clock", "clocks", "time"]),
    ("the first day of school", ["school", "class", "teacher", "student"]),
    ("a thunderstorm", ["thunder", "storm", "lightning"]),
]

INCLUDE_WORDS = ["bright", "quiet", "simple", "together", "gentle", "wonderful", "always", "green"]
AVOID_WORDS = ["very", "really", "beautiful", "many", "also", "just"]
START_WORDS = ["Imagine", "Yes", "Today", "Often", "First"]

# Which constraint kinds can be drawn, with the values each may take.
CONSTRAINT_CHOICES: dict[str, list] = {
    "max_words": [15, 20, 25, 30, 40],
    "min_words": [10, 15],
    "lowercase": [None],
    "include_word": INCLUDE_WORDS,
    "avoid_word": AVOID_WORDS,
    "no_commas": [None],
    "bullets": [2, 3],
    "end_with": ["?", "!"],
    "start_with": START_WORDS,
}

# Pairs of kinds that contradict each other or the formatting of the other.
INCOMPATIBLE = {
    frozenset({"max_words", "min_words"}),
    frozenset({"bullets", "start_with"}),
    frozenset({"bullets", "end_with"}),
    frozenset({"bullets", "no_commas"}),
}


def _draw_constraints(rng: random.Random, n: int) -> list[dict]:
    kinds: list[str] = []
    while len(kinds) < n:
        kind = rng.choice(sorted(CONSTRAINT_CHOICES))
        if kind in kinds or any(frozenset({kind, k}) in INCOMPATIBLE for k in kinds):
            continue
        kinds.append(kind)
    return [{"kind": k, "value": rng.choice(CONSTRAINT_CHOICES[k])} for k in kinds]


@dataclass(frozen=True)
class BuiltinPrompts:
    """`data=builtin`: the generated prompt set (conf/data/builtin.yaml's keys)."""

    num_prompts: int = 600  # distinct instructions in the pool (test, validation, iteration partitions)
    seed: int = 1234  # the same seed always gives the same instructions
    max_constraints: int = 2  # each instruction has 1..max_constraints constraints

    def __call__(self) -> list[Prompt]:
        return make_records(self.num_prompts, self.seed, self.max_constraints)


def make_records(num_prompts: int, seed: int, max_constraints: int = 2) -> list[Prompt]:
    """`num_prompts` distinct instructions, each with 1..max_constraints constraints (in `meta`, with the
    topic and its keywords, for the rules oracle); no teacher answers."""
    capacity = len(TASKS) * len(TOPICS) * 50
    if num_prompts > capacity:
        raise ValueError(f"data.num_prompts={num_prompts} exceeds what the builtin generator can make")
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < num_prompts:
        topic, keywords = rng.choice(TOPICS)
        task = rng.choice(TASKS).format(topic=topic)
        constraints = _draw_constraints(rng, rng.randint(1, max_constraints))
        instruction = " ".join([task] + [describe(c) for c in constraints])
        if instruction in seen:
            continue
        seen.add(instruction)
        records.append(Prompt.of(f"builtin-{len(records):05d}", instruction,
                                 meta={"topic": topic, "keywords": keywords, "constraints": constraints}))
    return records
