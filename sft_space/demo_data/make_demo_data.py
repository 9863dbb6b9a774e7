"""Build the bundled demo datasets from fixed vocabularies and a fixed seed.

Run `python -m sft_space.demo_data.make_demo_data` to rewrite the jsonl files in
this folder. The output is deterministic: the same script always writes the same
bytes, so the files in the repository can be checked against it (a test does).

Two sets:
- json-extract: short customer requests answered with exactly one JSON object of
  a fixed schema. The requests write times, dates and quantities the way people
  do ("half past eight in the evening", "the 3rd of May", "a dozen"), and the
  answer normalises them ("20:30", "2025-05-03", 12), so a model has to learn the
  format *and* the normalisation.
- pirate-chat: hand-written conversations (pirate_chat.txt) in the voice of a
  cheerful ship's cook; some multi-turn, some with a system prompt.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20251125  # fixed: the files in the repo are exactly what this script writes
JSON_TRAIN_ROWS = 640
JSON_TEST_ROWS = 120
PIRATE_TEST_ROWS = 15

# The one schema every json-extract answer follows, keys in this order.
JSON_EXTRACT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["intent", "name", "date", "time", "quantity", "item"],
    "properties": {
        "intent": {"enum": ["book_table", "order_product", "cancel_order", "schedule_delivery", "report_issue"]},
        "name": {"type": ["string", "null"]},
        "date": {"type": ["string", "null"], "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "time": {"type": ["string", "null"], "pattern": r"^\d{2}:\d{2}$"},
        "quantity": {"type": ["integer", "null"]},
        "item": {"type": ["string", "null"]},
    },
}

FIRST_NAMES = [
    "Priya",
    "Tom",
    "Aisha",
    "Lukas",
    "Mei",
    "Carlos",
    "Fatima",
    "Jonas",
    "Sofia",
    "Kwame",
    "Elena",
    "Ravi",
    "Hannah",
    "Omar",
    "Yuki",
    "Grace",
    "Mateo",
    "Ingrid",
    "Daniel",
    "Amara",
    "Leo",
    "Nadia",
    "Samuel",
    "Chloe",
    "Tariq",
    "Freya",
    "Diego",
    "Zara",
    "Henrik",
    "Lina",
]
LAST_NAMES = [
    "Patel",
    "Becker",
    "Okafor",
    "Nguyen",
    "Garcia",
    "Khan",
    "Larsen",
    "Rossi",
    "Mensah",
    "Kowalski",
    "Silva",
    "Tanaka",
    "Murphy",
    "Haddad",
    "Novak",
    "Dubois",
    "Costa",
    "Schmidt",
    "Ali",
    "Evans",
]
PRODUCTS = [
    "blue ceramic mugs",
    "AA batteries",
    "spiral notebooks",
    "wireless mice",
    "yoga mats",
    "desk lamps",
    "water bottles",
    "USB-C cables",
    "cotton tote bags",
    "phone chargers",
    "paperback planners",
    "wooden chopping boards",
    "garden gloves",
    "coffee filters",
    "bike lights",
    "wool socks",
    "tea towels",
    "ink cartridges",
    "reading glasses",
    "plant pots",
]
FAULTY_THINGS = [
    "washing machine",
    "laptop charger",
    "coffee grinder",
    "electric kettle",
    "printer",
    "router",
    "blender",
    "vacuum cleaner",
    "desk lamp",
    "headphones",
    "microwave",
    "toaster",
]
PROBLEMS = [
    "stopped working",
    "arrived broken",
    "makes a loud noise",
    "won't turn on",
    "keeps disconnecting",
    "is leaking",
    "smells of burning",
    "has a cracked case",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
NUMBER_WORDS = {
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
    11: "eleven",
    12: "twelve",
    15: "fifteen",
    20: "twenty",
}
HOUR_WORDS = {h: NUMBER_WORDS[h] for h in range(1, 13)}
YEARS = [2025, 2026]


def ordinal(n: int) -> str:
    """1 -> '1st', 22 -> '22nd', 13 -> '13th'."""
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def say_date(rng: random.Random) -> tuple[str, str]:
    """A date written as a person would, and its ISO form."""
    year = rng.choice(YEARS)
    month = rng.randrange(12)
    day = rng.randint(1, MONTH_DAYS[month])
    iso = f"{year:04d}-{month + 1:02d}-{day:02d}"
    name = MONTHS[month]
    spoken = rng.choice(
        [
            f"on {day} {name} {year}",
            f"on {name} {day}, {year}",
            f"on the {ordinal(day)} of {name} {year}",
            f"on {name} {ordinal(day)} {year}",
            f"on {iso}",
            f"on {day}/{month + 1}/{year} (day/month)",
        ]
    )
    return spoken, iso


def say_time(rng: random.Random) -> tuple[str, str]:
    """A time written as a person would, and its 24-hour HH:MM form."""
    kind = rng.randrange(6)
    if kind == 0:
        return "at noon", "12:00"
    hour24 = rng.randint(8, 22)
    minute = rng.choice([0, 0, 15, 30, 30, 45])
    hour12 = hour24 % 12 or 12
    ampm = "am" if hour24 < 12 else "pm"
    iso = f"{hour24:02d}:{minute:02d}"
    if kind == 1:
        return f"at {hour24:02d}:{minute:02d}", iso
    if kind == 2:
        spoken = f"{hour12}:{minute:02d}{ampm}" if minute else f"{hour12}{ampm}"
        return f"at {spoken}", iso
    if kind == 3:
        spoken = f"{hour12}:{minute:02d} {ampm.upper()}" if minute else f"{hour12} {ampm.upper()}"
        return f"at {spoken}", iso
    part = "in the morning" if hour24 < 12 else ("in the afternoon" if hour24 < 18 else "in the evening")
    if minute == 0:
        if hour24 == 12:
            return "at twelve noon", iso  # not "twelve o'clock in the afternoon"
        return f"at {HOUR_WORDS[hour12]} o'clock {part}", iso
    if minute == 30:
        return f"at half past {HOUR_WORDS[hour12]} {part}", iso
    if minute == 15:
        return f"at quarter past {HOUR_WORDS[hour12]} {part}", iso
    # quarter to the next hour
    nxt = hour24 + 1
    nxt12 = nxt % 12 or 12  # the part of the day is the time's own: 11:45 is "quarter to twelve in the morning"
    return f"at quarter to {HOUR_WORDS[nxt12]} {part}", f"{hour24:02d}:45"


def say_quantity(rng: random.Random, low: int, high: int) -> tuple[str, int]:
    """A quantity in digits, in words or as 'a dozen', and its integer."""
    n = rng.randint(low, high)
    if rng.random() < 0.15 and high >= 12:
        return rng.choice([("a dozen", 12), ("two dozen", 24), ("half a dozen", 6)])
    if n in NUMBER_WORDS and rng.random() < 0.55:
        return NUMBER_WORDS[n], n
    return str(n), n


def say_name(rng: random.Random) -> tuple[str | None, str | None]:
    """Maybe a name ('I'm Priya Patel'), and the name as extracted."""
    if rng.random() < 0.25:
        return None, None
    full = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    if rng.random() < 0.3:
        full = full.split()[0]
    return rng.choice([f"I'm {full}.", f"This is {full}.", f"Name: {full}.", f"My name is {full}."]), full


def answer(intent, name=None, date=None, time=None, quantity=None, item=None) -> str:
    return json.dumps({"intent": intent, "name": name, "date": date, "time": time, "quantity": quantity, "item": item})


def book_table(rng):
    d_say, d = say_date(rng)
    t_say, t = say_time(rng)
    q_say, q = say_quantity(rng, 1, 12)
    n_say, n = say_name(rng)
    people = "person" if q == 1 else "people"
    core = rng.choice(
        [
            f"Could I book a table for {q_say} {d_say} {t_say}?",
            f"Table for {q_say} please, {d_say}, {t_say}.",
            f"We'd like to reserve a table for {q_say} {people} {d_say} {t_say}.",
            f"Hi! Any chance of a table {d_say} {t_say}? We are {q_say}.",
            f"I want to make a dinner reservation for {q_say} {t_say} {d_say}.",
        ]
    )
    text = f"{core} {n_say}" if n_say and rng.random() < 0.8 else (f"{n_say} {core}" if n_say else core)
    return text, answer("book_table", n, d, t, q, None)


def order_product(rng):
    q_say, q = say_quantity(rng, 1, 20)
    item = rng.choice(PRODUCTS)
    n_say, n = say_name(rng)
    with_date = rng.random() < 0.4
    d_say, d = say_date(rng) if with_date else ("", None)
    core = rng.choice(
        [
            f"I'd like to order {q_say} {item}.",
            f"Please send me {q_say} {item}.",
            f"Can I get {q_say} of your {item}?",
            f"Order request: {q_say} {item}, thanks.",
            f"Hello, I need {q_say} {item} for the office.",
        ]
    )
    if with_date:
        core = core.rstrip(".?!,") + rng.choice([f", delivered {d_say}.", f". I need them by {d_say[3:]}."])
    text = f"{n_say} {core}" if n_say else core
    return text, answer("order_product", n, d, None, q, item)


def cancel_order(rng):
    item = rng.choice(PRODUCTS)
    n_say, n = say_name(rng)
    placed = rng.random() < 0.5
    d_say, d = say_date(rng) if placed else ("", None)
    core = rng.choice(
        [
            f"Please cancel my order of {item}.",
            f"I want to cancel the {item} I ordered.",
            f"Cancel the {item} order, I don't need them any more.",
            f"Can you stop my {item} order before it ships?",
        ]
    )
    if placed:
        core = core.rstrip(".?!") + f" - I placed it {d_say}."
    text = f"{core} {n_say}" if n_say else core
    return text, answer("cancel_order", n, d, None, None, item)


def schedule_delivery(rng):
    item = rng.choice(PRODUCTS)
    d_say, d = say_date(rng)
    t_say, t = say_time(rng)
    n_say, n = say_name(rng)
    with_q = rng.random() < 0.5
    q_say, q = say_quantity(rng, 2, 20) if with_q else ("", None)
    what = f"{q_say} {item}" if with_q else f"my {item}"  # "a dozen yoga mats", never "the a dozen yoga mats"
    core = rng.choice(
        [
            f"Can you deliver {what} {d_say} {t_say}?",
            f"Please schedule delivery of {what} {d_say}, {t_say}.",
            f"I'll be home {d_say} {t_say}, could {what} arrive then?",
            f"Delivery slot request: {what}, {d_say} {t_say}.",
        ]
    )
    text = f"{n_say} {core}" if n_say else core
    return text, answer("schedule_delivery", n, d, t, q, item)


def report_issue(rng):
    thing = rng.choice(FAULTY_THINGS)
    problem = rng.choice(PROBLEMS)
    n_say, n = say_name(rng)
    dated = rng.random() < 0.5
    d_say, d = say_date(rng) if dated else ("", None)
    core = rng.choice(
        [
            f"My {thing} {problem}.",
            f"The {thing} I bought {problem}, what can you do?",
            f"Help! Our {thing} {problem}.",
            f"Support ticket: {thing} {problem}.",
        ]
    )
    if dated:
        core = core.rstrip(".?!") + rng.choice([f". It started {d_say}.", f" - delivered {d_say}."])
    text = f"{n_say} {core}" if n_say else core
    return text, answer("report_issue", n, d, None, None, thing)


MAKERS = [book_table, order_product, cancel_order, schedule_delivery, report_issue]


def json_extract_rows(count: int, rng: random.Random, seen: set[str]) -> list[dict]:
    rows = []
    while len(rows) < count:
        request, reply = rng.choice(MAKERS)(rng)
        if request in seen:
            continue
        seen.add(request)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": request},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return rows


def parse_pirate_source(text: str) -> list[dict]:
    """Parse pirate_chat.txt: conversations separated by '---', one 'role: text' per line."""
    conversations = []
    for block in text.split("\n---\n"):
        messages = []
        for line in block.strip().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            role, _, content = line.partition(":")
            role = role.strip()
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"pirate_chat.txt: unknown role {role!r} in line {line!r}")
            messages.append({"role": role, "content": content.strip()})
        if messages:
            conversations.append({"messages": messages})
    return conversations


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    files = {
        "json-extract.train.jsonl": json_extract_rows(JSON_TRAIN_ROWS, rng, seen),
        "json-extract.test.jsonl": json_extract_rows(JSON_TEST_ROWS, rng, seen),
    }
    pirate = parse_pirate_source((HERE / "pirate_chat.txt").read_text(encoding="utf-8"))
    random.Random(SEED).shuffle(pirate)
    files["pirate-chat.test.jsonl"] = pirate[:PIRATE_TEST_ROWS]
    files["pirate-chat.train.jsonl"] = pirate[PIRATE_TEST_ROWS:]
    return files


def main() -> None:
    for name, rows in build().items():
        write_jsonl(HERE / name, rows)
        print(f"wrote {name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
