"""The json-extract demo set's generator: customer requests written the many ways people write them, each answered
with one JSON object (the rules: json-extract-rules.md).

A model should learn the task here, not a list: names and products come from open vocabularies (vocab.py, with
made-up words no list holds), the sender's name sits anywhere (an introduction, a sign-off, a form field) beside
other people who are not the sender (the member of staff greeted, a sister, a colleague), and numbers that are not
the quantity stand beside it (order and phone numbers, prices, flat numbers, the day of a date). Messages come as
short notes, emails, chat lines (lower case, abbreviations, typos) and web forms; dates and times in every common
spelling ("7.30pm", "19h30", "1930 hrs", "14.03.2026", "sat 14th march"); parties that add up, counts on
cancellations and complaints, deliveries with no time, relative dates (no calendar: null).

Deterministic: everything is drawn from the one `random.Random` passed in, so the same seed writes the same bytes.
Here: each intent's facts and core sentence, and a whole request with its answer (request_row); how facts are
said is sayings.py's, how a message is written writing.py's, the names and products vocab.py's.
"""

from __future__ import annotations

import json
import random

from .sayings import NUMBER_WORDS, one_thing, order_number, party, say_date, say_time, say_window, thing
from .vocab import PROBLEMS, RESTAURANTS, person, product, syllable_word
from .writing import scribble, typo, write_message


def answer(intent, name=None, date=None, time=None, quantity=None, item=None) -> str:
    return json.dumps(
        {"intent": intent, "name": name, "date": date, "time": time, "quantity": quantity, "item": item},
        ensure_ascii=False,
    )


# ------------------------------------------------------------------ each intent's facts and core sentence
def book_table(rng):
    p_say, p = party(rng)
    d_say, d = say_date(rng, 0.15)
    has_time = rng.random() < 0.92
    t_say, t = say_time(rng) if has_time else ("", None)
    at = f"at {t_say}" if has_time and not t_say.startswith(("half", "quarter")) else t_say
    when = " ".join(x for x in [("on " + d_say) if d else d_say, at] if x)
    place = rng.choice(RESTAURANTS)
    core = rng.choice(
        [
            f"Could I book a table {p_say} {when}?",
            f"I'd like to reserve a table {p_say}, {when}.",
            f"Do you have space {p_say} {when}?",
            f"Table {p_say} {when} please.",
            f"We'd love to come to {place} {when}, a table {p_say} if possible.",
            f"Can we get a booking {when}? It's {p_say.removeprefix('for ')}.",
            f"Booking request: {when}, {p_say.removeprefix('for ')}.",
        ]
    )
    return core, ("book_table", d, t, p, None)


def order_product(rng):
    t_say, q, item = thing(rng)
    dated = rng.random() < 0.3
    d_say, d = say_date(rng, 0.15) if dated else ("", None)
    core = rng.choice(
        [
            f"I'd like to order {t_say}.",
            f"Please send me {t_say}.",
            f"Can I get {t_say}?",
            f"Could you put {t_say} aside for me? I'll pay online.",
            f"I need {t_say} for the office.",
            f"Order: {t_say}.",
            f"I want to buy {t_say}.",
            f"Do you still sell {item}? I'd like {t_say}.",
        ]
    )
    if dated:
        core = core.rstrip(".?!") + rng.choice(
            [f", by {d_say} please.", f". I need them by {d_say}.", f", for {d_say}."]
        )
    return core, ("order_product", d, None, q, item)


def owned(rng: random.Random, t_say: str, q: int) -> str:
    """'the 2 garden chairs', 'my 4 kitchen chairs': a count after a determiner is still the count."""
    first = t_say.split()[0]
    if q > 1 and (first.isdigit() or first in NUMBER_WORDS):
        return f"{rng.choice(['the', 'my', 'our', 'the', 'those'])} {t_say}"
    return t_say


def cancel_order(rng):
    counted = rng.random() < 0.45
    if counted:
        t_say, q, item = one_thing(rng) if rng.random() < 0.25 else thing(rng, 2, 12, article=False)
        t_say = owned(rng, t_say, q) if rng.random() < 0.6 else t_say
        if q > 1 and rng.random() < 0.2:  # part of an order: "2 of the 5 yoga mats"
            t_say = f"{t_say.split(' ', 1)[0] if t_say[0].isdigit() else q} of the {q + rng.randint(1, 6)} {item}"
    else:
        singular, plural = product(rng)
        item = rng.choice([singular, plural])
        t_say, q = rng.choice([f"the {item}", f"my {item}", f"the order for the {item}"]), None
    dated = rng.random() < 0.45
    d_say, d = say_date(rng, 0.1) if dated else ("", None)
    core = rng.choice(
        [
            f"Please cancel {t_say}.",
            f"I want to cancel {t_say} I ordered.",
            f"Can you cancel {t_say}? I don't need {'it' if q == 1 else 'them'} any more.",
            f"Cancel {t_say} please, found them cheaper elsewhere.",
            f"Could you stop {t_say} before it ships?",
            f"I'd like to cancel my order: {t_say}.",
        ]
    )
    if dated:
        core = core.rstrip(".?!") + rng.choice(
            [f" - I ordered on {d_say}.", f". It was placed {d_say}.", f" (ordered {d_say})."]
        )
    return core, ("cancel_order", d, None, q, item)


def schedule_delivery(rng):
    counted = rng.random() < 0.55
    if counted:
        t_say, q, item = one_thing(rng) if rng.random() < 0.3 else thing(rng, 2, 30)
        t_say = owned(rng, t_say, q) if rng.random() < 0.5 else t_say
    else:
        singular, plural = product(rng)
        item = rng.choice([singular, singular, plural])
        t_say, q = rng.choice([f"my {item}", f"the {item}"]), None
    d_say, d = say_date(rng, 0.15)
    timing = rng.random()
    if timing < 0.15:
        w_say, t = "", None  # a delivery with no time
    elif timing < 0.45:
        w_say, t = say_window(rng)
    else:
        w_say, t = say_time(rng)
        w_say = w_say if w_say.startswith(("half", "quarter", "noon", "midday")) else f"at {w_say}"
    when = " ".join(x for x in [d_say if not d else ("on " + d_say if rng.random() < 0.6 else d_say), w_say] if x)
    core = rng.choice(
        [
            f"Can you deliver {t_say} {when}?",
            f"Please schedule delivery of {t_say} for {when}.",
            f"I'll be home {when}, could {t_say} arrive then?",
            f"Delivery request: {t_say}, {when}.",
            f"Is it possible to have {t_say} delivered {when}?",
            f"Could the driver bring {t_say} {when}?",
        ]
    )
    return core, ("schedule_delivery", d, t, q, item)


# a problem said of several things: "is leaking" -> "are leaking"
THEY_FORM = {"is": "are", "has": "have", "doesn't": "don't", "wobbles": "wobble", "makes": "make", "keeps": "keep",
             "gets": "get", "smells": "smell", "rattles": "rattle"}  # fmt: skip


def report_issue(rng):
    singular, plural = product(rng)
    problem = rng.choice(PROBLEMS)
    counted = rng.random() < 0.25
    if counted:
        total = rng.randint(3, 24)
        bad = rng.randint(1, min(total - 1, 6))
        bad_say = NUMBER_WORDS[bad] if rng.random() < 0.5 else str(bad)
        what = f"{bad_say} of the {total} {plural}"
        verb, _, rest = problem.partition(" ")
        core_problem = " ".join([THEY_FORM.get(verb, verb), rest]).strip()
        item, q = plural, bad
        core = rng.choice(
            [
                f"{what[0].upper()}{what[1:]} I ordered {core_problem}.",
                f"Of the {total} {plural} I got, {bad_say} {core_problem}.",
            ]
        )
    else:
        item, q = singular, None
        core = rng.choice(
            [
                f"My {singular} {problem}.",
                f"The {singular} I bought from you {problem}, what can you do?",
                f"Help! Our new {singular} {problem}.",
                f"Complaint: the {singular} {problem}.",
                f"I'm really disappointed - the {singular} {problem}.",
                f"I ordered a {singular} and it {problem}. I'd like a replacement or a refund.",
                f"I placed an order with you last month and the delivery came on time, which was great, but the "
                f"{singular} {problem}. I'd like to know what my options are, as I use it every day.",
                f"Not happy. The {singular} from my last order {problem} and nobody answered my emails. Please sort "
                "out a replacement or a refund.",
                f"The {singular} from order {order_number(rng)} {problem}.",
                f"{singular} {problem}, order {order_number(rng)}",
                f"Your delivery came today but the {singular} {problem}.",
            ]
        )
    dated = rng.random() < 0.45
    d_say, d = say_date(rng, 0.1) if dated else ("", None)
    if dated:
        core = core.rstrip(".?!") + rng.choice(
            [f". It arrived {('on ' + d_say) if d else d_say}.", f" - delivered {d_say}.", f". It broke {d_say}."]
        )
    return core, ("report_issue", d, None, q, item)


MAKERS = [book_table, order_product, cancel_order, schedule_delivery, report_issue]


def request_row(rng: random.Random) -> tuple[str, str]:
    """One request and its answer."""
    maker = rng.choice(MAKERS)
    core, (intent, date, time, quantity, item) = maker(rng)
    named = rng.random() < 0.7
    first, full = person(rng)
    name = (full if rng.random() < 0.45 else first) if named else None
    staff = person(rng)[0] if rng.random() < 0.7 else syllable_word(rng).capitalize()
    text = write_message(rng, core, intent, name, staff)
    if item and rng.random() < 0.05 and item in text:
        slipped = " ".join(typo(w, rng) if len(w) > 5 else w for w in item.split(" "))
        text, item = text.replace(item, slipped), slipped  # a misspelt item is copied as written (the rules)
    facts = [f for f in (name, item) if f]
    text = scribble(text, facts, rng, chat=text == text.lower())
    # the answer copies what the message says: a name or item the message wrote in lower case is lower case
    lowered = text == text.lower()
    if lowered:
        name = name.lower() if name else None
        item = item.lower() if item else None
    return text, answer(intent, name, date, time, quantity, item)
