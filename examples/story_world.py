"""Stories and questions from a small simulated world, in the spirit of the public bAbI tasks (Weston et al. 2015,
"Towards AI-complete question answering"), written here: people move between places, pick up and drop objects, and
the narrator says so, with distractor sentences about other people; each question comes with its answer and the
indices of the sentences that support it. Deterministic by seed.

Task types (the bAbI numbering): 1 single supporting fact, 2 two supporting facts, 3 three supporting facts, 6 yes/no
questions, 7 counting, 8 lists, 9 simple negation, 10 indefinite knowledge, 11 basic coreference, 12 conjunction,
15 basic deduction, 19 path finding.

    python examples/story_world.py 2      # prints a few stories of task 2
"""

from __future__ import annotations

import dataclasses
import random
import sys

PEOPLE = ["mary", "john", "daniel", "sandra"]
PLACES = ["kitchen", "hallway", "bathroom", "garden", "office", "bedroom"]
OBJECTS = ["football", "apple", "milk"]
MOVES = ["moved to the", "went to the", "journeyed to the", "travelled to the", "went back to the"]
TAKES = ["got the", "picked up the", "grabbed the", "took the"]
DROPS = ["dropped the", "discarded the", "put down the", "left the"]
TASKS = (1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 15, 19)
# The longest story of each task (sentences before the question), as in the originals' 1k sets.
MAX_SENTENCES = {1: 10, 2: 50, 3: 50, 6: 10, 7: 20, 8: 20, 9: 10, 10: 10, 11: 10, 12: 10, 15: 8, 19: 5}


@dataclasses.dataclass
class Example:
    story: list[list[str]]   # sentences of words, oldest first
    question: list[str]
    answer: str              # one word, or words joined by commas (lists, paths)
    supporting: list[int]    # indices into story (none for "nothing" and "none": no sentence says so)

    def text(self) -> str:
        lines = [f"{i + 1} {' '.join(s)}." for i, s in enumerate(self.story)]
        support = " ".join(str(i + 1) for i in self.supporting)
        return "\n".join(lines + [f"? {' '.join(self.question)}? {self.answer} (supported by {support})"])


class World:
    """Where everyone is and who carries what, and the story told so far."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.place: dict[str, str | None] = {p: None for p in PEOPLE}
        self.holder: dict[str, str | None] = {o: None for o in OBJECTS}
        self.object_place: dict[str, str | None] = {o: None for o in OBJECTS}
        self.story: list[list[str]] = []
        # per person: index of the last sentence that placed them; per object: its (sentence, event) history
        self.last_move: dict[str, int] = {}
        self.object_events: dict[str, list[tuple[int, str, str]]] = {o: [] for o in OBJECTS}
        self.object_trail: dict[str, list[tuple[str, int]]] = {o: [] for o in OBJECTS}  # (place, sentence)

    def say(self, words: str) -> int:
        self.story.append(words.split())
        return len(self.story) - 1

    def move(self, person: str, place: str | None = None) -> int:
        place = place or self.rng.choice([p for p in PLACES if p != self.place[person]])
        self.place[person] = place
        index = self.say(f"{person} {self.rng.choice(MOVES)} {place}")
        self.last_move[person] = index
        for obj, holder in self.holder.items():
            if holder == person:
                self._object_at(obj, place, index)
        return index

    def _object_at(self, obj: str, place: str, index: int) -> None:
        self.object_place[obj] = place
        trail = self.object_trail[obj]
        if not trail or trail[-1][0] != place:
            trail.append((place, index))

    def take(self, person: str, obj: str) -> int:
        self.holder[obj] = person
        index = self.say(f"{person} {self.rng.choice(TAKES)} {obj}")
        self.object_events[obj].append((index, "take", person))
        self._object_at(obj, self.place[person], index)
        return index

    def drop(self, person: str, obj: str) -> int:
        self.holder[obj] = None
        index = self.say(f"{person} {self.rng.choice(DROPS)} {obj}")
        self.object_events[obj].append((index, "drop", person))
        return index

    def carried(self, person: str) -> list[str]:
        return [o for o in OBJECTS if self.holder[o] == person]

    def random_event(self, object_rate: float) -> None:
        """One sentence: a pick-up or drop by someone already somewhere (with probability object_rate, where one is
        possible), else a move."""
        rng = self.rng
        placed = [p for p in PEOPLE if self.place[p] is not None]
        if placed and rng.random() < object_rate:
            person = rng.choice(placed)
            held = self.carried(person)
            free = [o for o in OBJECTS if self.holder[o] is None and
                    (self.object_place[o] in (None, self.place[person]))]
            if held and (not free or rng.random() < 0.4):
                self.drop(person, rng.choice(held))
                return
            if free and len(held) < 2:
                self.take(person, rng.choice(free))
                return
        self.move(rng.choice(PEOPLE))


def _length(rng: random.Random, task: int) -> int:
    top = MAX_SENTENCES[task]
    return rng.randint(max(2, top // 5), top)


def _object_story_length(rng: random.Random) -> int:
    """Sentences before the question in tasks 2 and 3, placed as the originals place theirs: a story asks five
    questions, each after at least three new sentences and then after each further one with probability 1/2; the
    question here is one of the five, drawn uniformly."""
    length = 0
    for _ in range(rng.randint(1, 5)):
        length += 3
        while rng.random() < 0.5:
            length += 1
    return length


def _where_is_person(rng: random.Random) -> Example:
    w = World(rng)
    for _ in range(_length(rng, 1) - 1):
        w.move(rng.choice(PEOPLE))
    person = rng.choice(PEOPLE)
    w.move(person) if w.place[person] is None or rng.random() < 0.3 else None
    return Example(w.story, ["where", "is", person], w.place[person], [w.last_move[person]])


def _object_story(rng: random.Random, ready) -> World | None:
    """A story of pick-ups, drops and moves of the length of _object_story_length, continued until `ready(world)`;
    None where that takes more than the task's longest story."""
    w = World(rng)
    for _ in range(_object_story_length(rng)):
        w.random_event(object_rate=0.45)
    while not ready(w):
        if len(w.story) == MAX_SENTENCES[2]:
            return None
        w.random_event(object_rate=0.45)
    return w if len(w.story) <= MAX_SENTENCES[2] else None


def _where_is_object(rng: random.Random) -> Example:
    """Task 2: where an object someone carries is: where its holder went last (as the original asks only about
    carried objects)."""
    while (w := _object_story(rng, lambda w: any(w.holder.values()))) is None:
        pass
    obj = rng.choice([o for o in OBJECTS if w.holder[o] is not None])
    take = w.object_events[obj][-1][0]
    person = w.holder[obj]
    return Example(w.story, ["where", "is", "the", obj], w.place[person], sorted({take, w.last_move[person]}))


def _where_was_object_before(rng: random.Random) -> Example:
    """Task 3: where the object was before the place it is in now (two moves of it at least)."""
    def moved_objects(w):
        return [o for o in OBJECTS if len(w.object_trail[o]) >= 2]

    while (w := _object_story(rng, moved_objects)) is None:
        pass
    obj = rng.choice(moved_objects(w))
    trail = w.object_trail[obj]
    (before, i_before), (now, i_now) = trail[-2], trail[-1]
    take = max(i for i, kind, _ in w.object_events[obj] if kind == "take" and i <= i_now)
    return Example(w.story, ["where", "was", "the", obj, "before", "the", now], before,
                   sorted({i_before, take, i_now}))


def _is_person_in(rng: random.Random) -> Example:
    w = World(rng)
    for _ in range(2 * rng.randint(1, 5)):  # the original's stories: two moves, then a question, five times
        w.move(rng.choice(PEOPLE))
    person = rng.choice([p for p in PEOPLE if w.place[p] is not None])
    place = w.place[person] if rng.random() < 0.5 else rng.choice([p for p in PLACES if p != w.place[person]])
    answer = "yes" if place == w.place[person] else "no"
    return Example(w.story, ["is", person, "in", "the", place], answer, [w.last_move[person]])


def _carrying(rng: random.Random, task: int) -> Example:
    """Tasks 7 (how many) and 8 (what): the objects a person carries."""
    w = World(rng)
    for person in PEOPLE:
        w.move(person)
    for _ in range(_length(rng, task) - len(PEOPLE)):
        w.random_event(object_rate=0.7)
    holders = [p for p in PEOPLE if w.carried(p)]
    person = rng.choice(holders) if holders and rng.random() < 0.7 else rng.choice(PEOPLE)  # fewer "none"s
    held = w.carried(person)
    supporting = sorted({i for o in OBJECTS for i, _, who in w.object_events[o] if who == person})
    if task == 7:
        return Example(w.story, ["how", "many", "objects", "is", person, "carrying"],
                       ["none", "one", "two", "three"][len(held)], supporting)
    return Example(w.story, ["what", "is", person, "carrying"], ",".join(sorted(held)) or "nothing", supporting)


def _negation(rng: random.Random, indefinite: bool) -> Example:
    """Tasks 9 (is, is not) and 10 (is either in A or B: maybe)."""
    story, state, last = [], {}, {}
    for _ in range(_length(rng, 10 if indefinite else 9)):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        kind = rng.random()
        if indefinite and kind < 0.35:
            other = rng.choice([p for p in PLACES if p != place])
            story.append(f"{person} is either in the {place} or the {other}".split())
            state[person] = {place, other}
        elif not indefinite and kind < 0.35:
            story.append(f"{person} is {rng.choice(['not', 'no longer'])} in the {place}".split())
            state[person] = ("not", place)
        else:
            story.append(f"{person} {rng.choice(['is in the', 'went to the', 'journeyed to the'])} {place}".split())
            state[person] = {place}
        last[person] = len(story) - 1
    person = rng.choice(list(state))
    known = state[person]
    if isinstance(known, tuple):  # only where they are not
        place = known[1] if rng.random() < 0.5 else rng.choice(PLACES)
        answer = "no" if place == known[1] else "maybe" if indefinite else "no"
        if not indefinite and place != known[1]:
            place = known[1]  # the negated place: the only place a negation answers for
    else:
        place = rng.choice(sorted(known)) if rng.random() < 0.6 else rng.choice(PLACES)
        answer = ("yes" if len(known) == 1 else "maybe") if place in known else "no"
    return Example(story, ["is", person, "in", "the", place], answer, [last[person]])


def _coreference(rng: random.Random) -> Example:
    """Task 11, as the original builds it: pairs of 'mary went to the kitchen. afterwards she went to the garden.',
    and the question asks where the last pair's person is."""
    pronoun = {"mary": "she", "sandra": "she", "john": "he", "daniel": "he"}
    story = []
    for _ in range(rng.randint(1, 5)):
        person = rng.choice(PEOPLE)
        story.append(f"{person} {rng.choice(MOVES)} {rng.choice(PLACES)}".split())
        then, place = rng.choice(["after that", "then", "afterwards"]), rng.choice(PLACES)
        story.append(f"{then} {pronoun[person]} went to the {place}".split())
    return Example(story, ["where", "is", person], place, [len(story) - 1])


def _conjunction(rng: random.Random) -> Example:
    """Task 12: 'mary and daniel went to the kitchen'."""
    story, place, last = [], {}, {}
    for i in range(_length(rng, 12)):
        a, b = rng.sample(PEOPLE, 2)
        where = rng.choice(PLACES)
        story.append(f"{a} and {b} {rng.choice(MOVES)} {where}".split())
        place[a] = place[b] = where
        last[a] = last[b] = i
    person = rng.choice(list(place))
    return Example(story, ["where", "is", person], place[person], [last[person]])


ANIMALS = ["mouse", "sheep", "wolf", "cat"]
PLURAL = {"mouse": "mice", "sheep": "sheep", "wolf": "wolves", "cat": "cats"}
NAMES = ["gertrude", "winona", "jessica", "emily"]


def _deduction(rng: random.Random) -> Example:
    """Task 15: 'sheep are afraid of wolves. gertrude is a sheep. what is gertrude afraid of? wolf'."""
    afraid = {a: rng.choice([b for b in ANIMALS if b != a]) for a in ANIMALS}
    facts = [(f"{PLURAL[a]} are afraid of {PLURAL[b]}".split(), a) for a, b in afraid.items()]
    kinds = dict(zip(NAMES, (rng.choice(ANIMALS) for _ in NAMES)))
    members = [(f"{n} is a {k}".split(), n) for n, k in kinds.items()]
    sentences = facts + members
    rng.shuffle(sentences)
    story = [s for s, _ in sentences]
    name = rng.choice(NAMES)
    kind = kinds[name]
    supporting = sorted([i for i, (_, who) in enumerate(sentences) if who in (name, kind)])
    return Example(story, ["what", "is", name, "afraid", "of"], afraid[kind], supporting)


DIRECTIONS = {"north": (0, 1, "n"), "south": (0, -1, "s"), "east": (1, 0, "e"), "west": (-1, 0, "w")}


def _path_finding(rng: random.Random) -> Example:
    """Task 19: five 'the A is north of the B' facts over rooms on a grid; the two-step way between two rooms."""
    while True:
        rooms = rng.sample(PLACES, 5)
        position = {rooms[0]: (0, 0)}
        facts = []
        for room in rooms[1:]:
            anchor = rng.choice(list(position))
            direction = rng.choice(list(DIRECTIONS))
            dx, dy, _ = DIRECTIONS[direction]
            spot = (position[anchor][0] + dx, position[anchor][1] + dy)
            if spot in position.values():
                break
            position[room] = spot
            facts.append((room, direction, anchor))
        if len(position) < 5:
            continue
        # a pair two steps apart along the facts' edges
        edges = {}
        for room, direction, anchor in facts:
            dx, dy, letter = DIRECTIONS[direction]
            opposite = {"n": "s", "s": "n", "e": "w", "w": "e"}[letter]
            edges.setdefault(anchor, []).append((room, letter))
            edges.setdefault(room, []).append((anchor, opposite))
        pairs = [(a, c, [l1, l2]) for a in edges for b, l1 in edges[a] for c, l2 in edges[b] if c != a]
        if not pairs:
            continue
        start, end, steps = rng.choice(pairs)
        sentences = [f"the {room} is {direction} of the {anchor}".split() for room, direction, anchor in facts]
        order = list(range(len(sentences)))
        rng.shuffle(order)
        story = [sentences[i] for i in order]
        used = {start, end} | {b for a in [start] for b, _ in edges[a]}
        supporting = sorted(j for j, i in enumerate(order) if {facts[i][0], facts[i][2]} <= used)
        return Example(story, ["how", "do", "you", "go", "from", "the", start, "to", "the", end], ",".join(steps),
                       supporting)


def generate(task: int, count: int, seed: int) -> list[Example]:
    """`count` examples of bAbI-style task `task` (one of TASKS), the same for the same seed."""
    rng = random.Random(seed * 100 + task)
    make = {1: _where_is_person, 2: _where_is_object, 3: _where_was_object_before, 6: _is_person_in,
            7: lambda r: _carrying(r, 7), 8: lambda r: _carrying(r, 8), 9: lambda r: _negation(r, False),
            10: lambda r: _negation(r, True), 11: _coreference, 12: _conjunction, 15: _deduction,
            19: _path_finding}
    if task not in make:
        raise ValueError(f"task must be one of {TASKS}, got {task}")
    return [make[task](rng) for _ in range(count)]


if __name__ == "__main__":
    for example in generate(int(sys.argv[1]) if len(sys.argv) > 1 else 1, 3, seed=0):
        print(example.text(), end="\n\n")
