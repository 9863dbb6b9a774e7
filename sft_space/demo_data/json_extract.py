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
"""

from __future__ import annotations

import datetime
import json
import random
import re

from .vocab import PACKED_GOODS, PROBLEMS, RESTAURANTS, person, product, syllable_word

MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
DEFAULT_YEAR = 2026  # a date written without a year is in this year (the rules)
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
HOURS = NUMBER_WORDS[:13]


def answer(intent, name=None, date=None, time=None, quantity=None, item=None) -> str:
    return json.dumps(
        {"intent": intent, "name": name, "date": date, "time": time, "quantity": quantity, "item": item},
        ensure_ascii=False,
    )


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ------------------------------------------------------------------ dates, times, counts
def say_date(rng: random.Random, relative_share: float = 0.1) -> tuple[str, str | None]:
    """A date as people write it and its ISO form; a relative one ('tomorrow') has none."""
    if rng.random() < relative_share:
        return rng.choice(["tomorrow", "this Friday", "next Saturday", "tonight", "next week", "on Sunday"]), None
    year = DEFAULT_YEAR if rng.random() < 0.55 else rng.choice([2025, 2026, 2027])
    day_of = datetime.date(year, 1, 1) + datetime.timedelta(days=rng.randrange(365))
    d, m, y = day_of.day, day_of.month, day_of.year
    month, mon = MONTHS[m - 1], MONTHS[m - 1][:3]
    weekday = WEEKDAYS[day_of.weekday()]
    with_year = [
        f"{d} {month} {y}",
        f"{month} {d}, {y}",
        f"the {ordinal(d)} of {month} {y}",
        f"{d:02d}/{m:02d}/{y}",
        f"{d}/{m}/{y}",
        f"{d}.{m}.{y}",
        f"{d:02d}.{m:02d}.{y}",
        f"{d}.{m}.{y % 100:02d}",
        f"{y}-{m:02d}-{d:02d}",
        f"{weekday} {d} {month} {y}",
    ]
    without_year = [
        f"{d} {month}",
        f"{d} {mon}",
        f"{month} {d}",
        f"the {ordinal(d)} of {month}",
        f"{ordinal(d)} {month}",
        f"{weekday[:3]} {ordinal(d)} {month}",
        f"{weekday} the {ordinal(d)}",  # no month: not a date this set can resolve
        f"{d}/{m}",
        f"{d}.{m}.",
    ]
    if y == DEFAULT_YEAR and rng.random() < 0.6:
        text = rng.choice(without_year)
        if text.startswith(weekday + " the"):
            text = f"{weekday} {ordinal(d)} {month}"
    else:
        text = rng.choice(with_year)
    return text, day_of.isoformat()


def say_time(rng: random.Random) -> tuple[str, str]:
    """A time in one of many spellings and its HH:MM form."""
    if rng.random() < 0.05:
        return rng.choice(["noon", "midday", "12 noon"]), "12:00"
    hour = rng.randint(7, 22)
    minute = rng.choice([0, 0, 0, 15, 30, 30, 45, 10, 20, 40, 50])
    h12, pm = hour % 12 or 12, hour >= 12
    ampm = "pm" if pm else "am"
    iso = f"{hour:02d}:{minute:02d}"
    part = "in the morning" if hour < 12 else ("in the afternoon" if hour < 18 else "in the evening")
    # the 12-hour forms most people write come up most often ("7pm", "7.30pm", "7:30 PM")
    forms = [
        f"{hour:02d}:{minute:02d}",
        f"{hour}:{minute:02d}",
        f"{hour}h{minute:02d}" if minute else f"{hour}h",
        f"{hour:02d}{minute:02d} hrs",
        *[f"{h12}.{minute:02d}{ampm}" if minute else f"{h12}{ampm}"] * 3,
        *[f"{h12}:{minute:02d} {ampm.upper()}" if minute else f"{h12} {ampm.upper()}"] * 2,
        *[f"{h12}:{minute:02d}{ampm}" if minute else f"{h12} {ampm}"] * 2,
    ]
    if minute == 0:
        forms.append(f"{HOURS[h12]} o'clock {part}" if hour != 12 else "twelve noon")
        forms.append(f"{HOURS[h12]} {ampm}")
    if minute == 30:
        forms.append(f"half past {HOURS[h12]} {part}")
        forms.append(f"half {h12} {part}")
    if minute == 15:
        forms.append(f"quarter past {HOURS[h12]} {part}")
    if minute == 45:
        forms.append(f"quarter to {HOURS[(hour + 1) % 12 or 12]} {part}")
    return rng.choice(forms), iso


def say_window(rng: random.Random) -> tuple[str, str]:
    """A delivery window ('between 2 and 4pm') and its start."""
    start = rng.randint(8, 18)
    end = start + rng.choice([1, 2, 2, 3])
    s12, e12 = start % 12 or 12, end % 12 or 12
    text = rng.choice(
        [
            f"between {s12} and {e12}{'pm' if end >= 12 else 'am'}",
            f"between {start:02d}:00 and {end:02d}:00",
            f"{s12}-{e12}{'pm' if end >= 12 else 'am'}",
            f"any time from {s12}{'pm' if start >= 12 else 'am'}",
        ]
    )
    return text, f"{start:02d}:00"


def say_count(rng: random.Random, low: int, high: int, article: bool = True) -> tuple[str, int]:
    """A count in digits, words, 'a dozen', 'a couple of' or 'a'."""
    roll = rng.random()
    if article and roll < 0.12:
        return "a", 1
    if roll < 0.2:
        return rng.choice([("a dozen", 12), ("a couple of", 2), ("half a dozen", 6), ("two dozen", 24)])
    n = rng.randint(low, high)
    if n <= 20 and rng.random() < 0.45:
        return NUMBER_WORDS[n], n
    return str(n), n


def thing(rng: random.Random, low: int = 1, high: int = 20, article: bool = True) -> tuple[str, int, str]:
    """'three oak chopping boards' / 'a pair of hiking boots' / 'two boxes of green tea': (text, count, item)."""
    roll = rng.random()
    if roll < 0.15:
        goods = rng.choice(sorted(PACKED_GOODS))
        one, many = PACKED_GOODS[goods]
        said, n = say_count(rng, low, min(high, 10), article)
        said = "one" if said == "a" and rng.random() < 0.5 else said
        return f"{said} {one if n == 1 else many} of {goods}", n, goods
    if roll < 0.22:
        kind = rng.choice(["hiking boots", "running shoes", "gloves", "socks", "jeans", "headphones", "scissors"])
        n = rng.choice([1, 1, 2, 3])
        said = "a pair of" if n == 1 else f"{NUMBER_WORDS[n] if rng.random() < 0.5 else n} pairs of"
        return f"{said} {kind}", n, kind
    singular, plural = product(rng)
    said, n = say_count(rng, low, high, article)
    if n == 1:
        said = ("an" if singular[0].lower() in "aeiou" else "a") if said == "a" else said
        return f"{said} {singular}", n, singular
    return f"{said} {plural}", n, plural


def one_thing(rng: random.Random) -> tuple[str, int, str]:
    """'a Bosch drill': one of something, counted 1 (the rules)."""
    singular, _ = product(rng)
    return f"{'an' if singular[0].lower() in 'aeiou' else 'a'} {singular}", 1, singular


def party(rng: random.Random) -> tuple[str, int]:
    """A party as people describe it, and how many people it is."""
    n = rng.randint(1, 12)
    friends = rng.randint(1, 6)
    adults, kids = rng.randint(1, 4), rng.randint(1, 3)
    forms = [
        (f"for {n}", n),
        (f"for {NUMBER_WORDS[n]}", n),
        (f"for {n} people" if n > 1 else "for 1 person", n),
        (f"a party of {n}", n),
        (f"for me and {friends} {'friend' if friends == 1 else 'friends'}", friends + 1),
        (f"me + {friends}", friends + 1),
        (
            f"for {adults} {'adult' if adults == 1 else 'adults'} and {kids} {'child' if kids == 1 else 'children'}",
            adults + kids,
        ),  # fmt: skip
        (
            f"{adults} adults + {kids} kids" if adults > 1 and kids > 1 else f"{adults + 1} adults + a baby",
            adults + kids if adults > 1 and kids > 1 else adults + 2,
        ),  # fmt: skip
        (
            f"{adults} adults {kids} kids" if adults > 1 and kids > 1 else f"{adults + 1} adults, 1 child",
            adults + kids if adults > 1 and kids > 1 else adults + 2,
        ),  # fmt: skip
        ("for my wife and I", 2),
        ("for my partner and me", 2),
        ("for the two of us", 2),
        ("just for me", 1),
        (f"for myself and {NUMBER_WORDS[friends]} {'colleague' if friends == 1 else 'colleagues'}", friends + 1),
    ]
    return rng.choice(forms)


# ------------------------------------------------------------------ what else a message says
def order_number(rng: random.Random) -> str:
    digits = str(rng.randint(100, 999999))
    return rng.choice([f"#{digits}", f"no. {digits}", f"{rng.choice(['ORD', 'A', 'SO'])}-{digits}", digits, digits])


def phone_number(rng: random.Random) -> str:
    return rng.choice(
        [
            f"08{rng.randint(10000000, 99999999)}",
            f"07{rng.randint(100, 999)} {rng.randint(100000, 999999)}",
            f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            f"0{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}",
        ]
    )


def price(rng: random.Random) -> str:
    return rng.choice(["£", "$", "€"]) + rng.choice(
        [str(rng.randint(3, 400)), f"{rng.randint(3, 400)}.{rng.randint(0, 99):02d}"]
    )


def someone_else(rng: random.Random) -> str:
    """A sentence naming a person who is not the sender."""
    other, full = person(rng)
    return rng.choice(
        [
            f"My sister {other} recommended you.",
            f"{other} from the office said you're the best.",
            f"My colleague {full} will pick it up.",
            f"It's for {other}'s birthday.",
            f"My flatmate {other} might answer the door.",
            f"{full} told me to get in touch.",
            f"My husband {other} loved it last time.",
        ]
    )


def extra(rng: random.Random, kind: str) -> str:
    """A sentence that adds numbers or people that are not the answer."""
    choices = [
        lambda: someone_else(rng),
        lambda: f"You can reach me on {phone_number(rng)}.",
        lambda: f"My number is {phone_number(rng)} if anything changes.",
    ]
    if kind in ("cancel_order", "schedule_delivery", "report_issue"):
        choices += [
            lambda: f"The order number is {order_number(rng)}.",
            lambda: f"Ref: {order_number(rng)}.",
            lambda: f"Order {order_number(rng)}.",
            lambda: f"(order {order_number(rng)})",
        ]
    if kind in ("order_product", "cancel_order", "report_issue"):
        choices += [lambda: f"I paid {price(rng)}.", lambda: f"It was {price(rng)} on your website."]
    if kind == "schedule_delivery":
        choices += [lambda: f"I'm in flat {rng.randint(2, 40)}, the buzzer is broken.", lambda: "Please ring twice."]
    if kind == "book_table":
        choices += [
            lambda: "One of us is vegetarian.",
            lambda: "Could we have a high chair?",
            lambda: "A table by the window would be lovely.",
            lambda: f"It's our {ordinal(rng.randint(2, 40))} anniversary.",
            lambda: f"My number is {phone_number(rng)}.",
        ]
    return rng.choice(choices)()


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


# ------------------------------------------------------------------ how the message is written
GREETINGS = ["Hi", "Hello", "Hey", "Dear", "Good morning", "Hiya"]
# greetings and sign-off words of many languages: a capitalised first or last word is not always a name
FOREIGN_GREETINGS = """Bonjour!|Hola!|Ciao!|Hallo!|Merhaba!|Hej!|Olá!|Salut!|Namaste!|Kia ora!|Dzień dobry!|Dobrý den!
|Konnichiwa!|Shalom!|Salaam!|Jambo!|Sawubona!|Aloha!|Γεια σας!|Привет!|Здравствуйте!|مرحبا|안녕하세요|こんにちは|你好
|Xin chào!|Grüß Gott!|Hei!|Moi!|Szia!|Buongiorno!|Buenos días!|Goedemorgen!|Sveiki!|Tere!|Ahoj!""".replace(
    "\n", ""
).split("|")
NOT_NAMES = ["Hi there!", "Hello team,", "Dear Sir or Madam,", "Good evening,", "Hey!", "To whom it may concern,"]
SIGN_OFFS = """Thanks,|Kind regards,|Best,|Cheers,|Many thanks,|Regards,|Thank you!|Warm wishes,|Danke,|Gracias,|Merci,
|Obrigado,|Saludos,|Dzięki,|Groetjes,|Beijos,|Grazie,|Tack,|Ta,|Spasibo,|Saygılarımla,|Mahalo,|Asante,|Dank je,
|Kiitos,|Köszönöm,""".replace("\n", "").split("|")
TITLES = ["Mr", "Ms", "Mrs", "Dr", "Mr.", "Dr.", "Prof."]
# never "for" -> "4" or "to" -> "2": a digit that is not a count would make the answer ambiguous
ABBREVIATIONS = {"please": "pls", "thanks": "thx", "tomorrow": "tmrw", "tonight": "2nite", "you": "u", "are": "r",
                 "would": "wd", "could": "cd", "because": "cos", "probably": "prob"}  # fmt: skip


def typo(word: str, rng: random.Random) -> str:
    """A slip of the keyboard: two letters swapped, one doubled or one dropped."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[: i + 1] + word[i] + word[i + 1 :]
    return word[:i] + word[i + 1 :]


def scribble(text: str, facts: list[str], rng: random.Random, chat: bool) -> str:
    """Typos and chat abbreviations in the words around the facts (a fact is never changed here)."""
    protected = " ".join(facts).lower().split()
    out = []
    for word in text.split(" "):
        bare = word.strip(".,!?:;").lower()
        if bare in protected or any(c.isdigit() for c in word):
            out.append(word)
            continue
        if chat and bare in ABBREVIATIONS and rng.random() < 0.5:
            word = word.lower().replace(bare, ABBREVIATIONS[bare])
        elif rng.random() < 0.04:
            word = typo(word, rng)
        out.append(word)
    return " ".join(out)


def write_message(rng: random.Random, core: str, kind: str, name: str | None, staff: str) -> str:
    """The core request inside a note, an email, a chat line or a web form, with the name where people put it."""
    style = rng.choices(["note", "email", "chat", "form"], weights=[35, 25, 30, 10])[0]
    extras = [extra(rng, kind) for _ in range(rng.choice([0, 0, 1, 1, 2]))]
    intro = (
        rng.choice([f"I'm {name}.", f"This is {name}.", f"My name is {name}.", f"{name} here.", f"It's {name}."])
        if name
        else ""
    )
    if style == "form":
        lines = [f"Name: {name}" if name else "Name: -", f"Message: {core}"]
        if rng.random() < 0.5:
            lines.insert(1, f"Phone: {phone_number(rng)}")
        lines += [f"Notes: {e}" for e in extras[:1]]
        return "\n".join(lines)
    if style == "email":
        greet = rng.choice(
            [f"{rng.choice(GREETINGS)} {staff},", rng.choice(NOT_NAMES), rng.choice(FOREIGN_GREETINGS), "Hello,", "Hi,"]
        )
        body = [core, *extras]
        rng.shuffle(body)
        where = rng.random()
        if name and where < 0.3:
            body.insert(0, intro)
        sign = rng.choice(SIGN_OFFS)
        if name and where >= 0.3:
            signed = f"{rng.choice(TITLES)} {name}" if " " in name and rng.random() < 0.2 else name  # no title kept
            closing = f"{sign}\n{signed}" if rng.random() < 0.6 else f"{sign} {signed}"
        else:
            closing = sign
        return f"{greet}\n\n{' '.join(body)}\n\n{closing}"
    if style == "chat":
        parts = [core, *extras]
        rng.shuffle(parts)
        if rng.random() < 0.4:
            parts.insert(0, rng.choice([f"hey {staff.lower()}!", "hiya", "hi!", "yo", "hello :)", "bonjour!"]))
        if name:
            said = rng.choice([f"its {name} here", f"{name} here", f"name's {name}", f"- {name}", f"this is {name}"])
            parts.insert(0 if rng.random() < 0.5 else len(parts), said)
        text = " ".join(parts)
        text = text.lower() if rng.random() < 0.6 else text
        text = re.sub(r"(?<!\d)\.(?=\s|$)", "", text) if rng.random() < 0.5 else text  # not "7.30pm" nor "3.5."
        return text + (rng.choice([" 🙏", " :)", " thx!", " ty", "!!"]) if rng.random() < 0.4 else "")
    parts = [core, *extras]
    rng.shuffle(parts)
    if name:
        if rng.random() < 0.5:
            parts.insert(0, intro)
        else:
            parts.append(rng.choice([f"- {name}", f"Thanks, {name}", f"Cheers, {name}", f"{name}"]))
    return " ".join(parts)


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
