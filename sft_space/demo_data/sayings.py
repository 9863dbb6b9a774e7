"""How json-extract's requests say their facts: dates in many spellings (no year -> 2026, relative -> null), times
(12-hour forms weighted as people write them, "19h30", "1930 hrs"), delivery windows, counts and the things
counted, parties that add up, and what else a message says beside them (order and phone numbers, prices, other
people). Every function draws from the `random.Random` it is given, in a fixed order (the set is rebuilt byte for
byte from its seed).
"""

from __future__ import annotations

import datetime
import random

from .vocab import PACKED_GOODS, person, product

MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
DEFAULT_YEAR = 2026  # a date written without a year is in this year (the rules)
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
HOURS = NUMBER_WORDS[:13]


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
