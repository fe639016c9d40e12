"""Goal-oriented dialogs of restaurant booking in the style of the public dialog bAbI tasks (Bordes, Boureau and
Weston 2017), generated here, deterministic by seed: a user asks for a table and the bot gathers the cuisine, the
place, the party size and the price range, issues an API call, updates it when the user changes their mind, proposes
the restaurants the call returned best rating first until one is accepted, and gives that restaurant's phone number
or address. Written from the tasks' public description; the knowledge base is made here.

Tasks: 1 issuing API calls; 2 updating API calls; 3 displaying options (the API call's results are shown in the
dialog as knowledge-base facts, and the bot must propose the best-rated restaurant not yet refused); 4 providing extra
information (the phone number or address of the restaurant chosen); 5 full dialogs (1 to 4 in turn).

A dialog is a list of (speaker, utterance) turns, speaker "user", "bot" or "kb" (a fact of the API call's results);
each bot turn is a response to predict from the turns before it.
"""

from __future__ import annotations

import dataclasses
import random

CUISINES = ["italian", "french", "indian", "spanish", "thai", "japanese"]
LOCATIONS = ["london", "paris", "rome", "madrid", "bombay", "tokyo"]
PEOPLE = ["two", "four", "six", "eight"]
PRICES = ["cheap", "moderate", "expensive"]
SLOTS = ("cuisine", "location", "people", "price")
RESTAURANTS_PER_QUERY = 4
SILENCE = "<silence>"


@dataclasses.dataclass(frozen=True)
class Restaurant:
    name: str
    rating: int

    @property
    def phone(self) -> str:
        return self.name + "_phone"

    @property
    def address(self) -> str:
        return self.name + "_address"

    def facts(self) -> list[str]:
        return [f"{self.name} R_rating {self.rating}", f"{self.name} R_phone {self.phone}",
                f"{self.name} R_address {self.address}"]


def knowledge_base(seed: int = 0) -> dict[tuple[str, str, str], list[Restaurant]]:
    """For each (cuisine, location, price): RESTAURANTS_PER_QUERY restaurants with distinct ratings in 1..8."""
    rng = random.Random(seed)
    kb = {}
    for cuisine in CUISINES:
        for location in LOCATIONS:
            for price in PRICES:
                ratings = rng.sample(range(1, 9), RESTAURANTS_PER_QUERY)
                kb[cuisine, location, price] = [Restaurant(f"resto_{location}_{price}_{cuisine}_{i + 1}", r)
                                                for i, r in enumerate(ratings)]
    return kb


# What the user says for each slot when asking (in the request) and when answering the bot's question.
SLOT_PHRASES = {
    "cuisine": ["with {} food", "with {} cuisine", "serving {} food"],
    "location": ["in {}", "in {} please"],
    "people": ["for {} people", "for {}"],
    "price": ["in a {} price range", "that is {}"],
}
ANSWERS = {
    "cuisine": ["{} food", "i love {} food", "{} please"],
    "location": ["{}", "{} please", "in {}"],
    "people": ["{}", "we will be {}", "for {} please"],
    "price": ["{} price range please", "{}", "a {} one"],
}
QUESTIONS = {
    "cuisine": "any preference on a type of cuisine",
    "location": "where should it be",
    "people": "how many people would be in your party",
    "price": "which price range are looking for",
}
UPDATES = {
    "cuisine": ["instead could it be with {} food", "actually i would prefer {} cuisine"],
    "location": ["actually i would prefer in {}", "instead could it be in {}"],
    "people": ["actually we will be {}", "can you make it for {} people"],
    "price": ["instead could it be in a {} price range", "actually i would prefer a {} place"],
}
VALUES = {"cuisine": CUISINES, "location": LOCATIONS, "people": PEOPLE, "price": PRICES}
GREETINGS = ["hi", "hello", "good morning", "hey there"]
REQUESTS = ["i would like to book a table", "can you book a table", "may i have a table", "i'd like a table"]
REFUSALS = ["no this does not work for me", "do you have something else", "no i don't like that"]
ACCEPTS = ["let's do it", "that looks great", "it's perfect"]
ASK_PHONE = ["may i have the phone number of the restaurant", "what is the phone number", "can you give me the phone"]
ASK_ADDRESS = ["can you provide the address", "what is the address", "where is it located"]


def api_call(goal: dict) -> str:
    return "api_call " + " ".join(goal[slot] for slot in SLOTS)


def _issue_call(rng: random.Random, turns: list, goal: dict) -> None:
    """Task 1's turns: greeting, a request with some slots, the bot's questions for the others, the call."""
    turns += [("user", rng.choice(GREETINGS)), ("bot", "hello what can i help you with today")]
    given = [slot for slot in SLOTS if rng.random() < 0.5]
    phrases = [rng.choice(SLOT_PHRASES[slot]).format(goal[slot]) for slot in given]
    rng.shuffle(phrases)
    # Where the bot speaks twice in a row, the user's silence between is a turn.
    turns += [("user", " ".join([rng.choice(REQUESTS)] + phrases)), ("bot", "i'm on it"), ("user", SILENCE)]
    for slot in SLOTS:
        if slot not in given:
            turns += [("bot", QUESTIONS[slot]), ("user", rng.choice(ANSWERS[slot]).format(goal[slot]))]
    turns += [("bot", "ok let me look into some options for you"), ("user", SILENCE), ("bot", api_call(goal))]


def _update_call(rng: random.Random, turns: list, goal: dict) -> None:
    """Task 2's turns: one to three changes of mind, each acknowledged, then the new call."""
    for _ in range(rng.randint(1, 3)):
        slot = rng.choice(SLOTS)
        goal[slot] = rng.choice([v for v in VALUES[slot] if v != goal[slot]])
        turns += [("user", rng.choice(UPDATES[slot]).format(goal[slot])),
                  ("bot", "sure is there anything else to update")]
    turns += [("user", "no"), ("bot", "ok let me look into some options for you"), ("user", SILENCE),
              ("bot", api_call(goal))]


def _show_results(turns: list, results: list[Restaurant]) -> None:
    for restaurant in results:
        turns += [("kb", fact) for fact in restaurant.facts()]


def _propose(rng: random.Random, turns: list, results: list[Restaurant]) -> Restaurant:
    """Task 3's turns: options best rating first until the user accepts one (after refusing up to three)."""
    ranked = sorted(results, key=lambda r: -r.rating)
    refusals = rng.randint(0, len(ranked) - 1)
    turns.append(("user", SILENCE))
    for restaurant in ranked[: refusals + 1]:
        turns.append(("bot", f"what do you think of this option: {restaurant.name}"))
        turns.append(("user", rng.choice(REFUSALS) if restaurant is not ranked[refusals] else rng.choice(ACCEPTS)))
    turns.append(("bot", "great let me do the reservation"))
    return ranked[refusals]


def _inform(rng: random.Random, turns: list, chosen: Restaurant) -> None:
    """Task 4's turns: the phone number, the address or both, then the goodbyes."""
    for ask in rng.sample([ASK_PHONE, ASK_ADDRESS], rng.randint(1, 2)):
        turns += [("user", rng.choice(ask)),
                  ("bot", f"here it is {chosen.phone if ask is ASK_PHONE else chosen.address}")]
    turns += [("user", "thank you"), ("bot", "is there anything i can help you with"), ("user", "no thank you"),
              ("bot", "you're welcome")]


def dialog(task: int, rng: random.Random, kb: dict) -> list[tuple[str, str]]:
    goal = {slot: rng.choice(VALUES[slot]) for slot in SLOTS}
    turns: list[tuple[str, str]] = []
    if task in (1, 2, 5):
        _issue_call(rng, turns, goal)
    if task in (2, 5):
        _update_call(rng, turns, goal)
    results = kb[goal["cuisine"], goal["location"], goal["price"]]
    if task in (3, 4):  # these start from the call already made: the request with every slot, then the call
        phrases = [rng.choice(SLOT_PHRASES[slot]).format(goal[slot]) for slot in SLOTS]
        turns += [("user", " ".join([rng.choice(REQUESTS)] + phrases)), ("bot", api_call(goal))]
    if task == 4:  # the restaurant already chosen: its facts only
        chosen = rng.choice(results)
        _show_results(turns, [chosen])
        turns += [("user", f"i would like {chosen.name}"), ("bot", "great let me do the reservation")]
        _inform(rng, turns, chosen)
    if task in (3, 5):
        _show_results(turns, results)
        chosen = _propose(rng, turns, results)
    if task == 5:
        _inform(rng, turns, chosen)
    return turns


def generate(task: int, count: int, seed: int, kb: dict) -> list[list[tuple[str, str]]]:
    """`count` dialogs of `task`, the same for the same seed."""
    rng = random.Random(seed * 10 + task)
    return [dialog(task, rng, kb) for _ in range(count)]
