"""How json-extract's requests are written: greetings (in ~30 languages too) and sign-offs, the sender's name in an
introduction, a sign-off or a form field, titles, notes, emails, chat lines (lower case, abbreviations, typos) and
web forms. Every function draws from the `random.Random` it is given, in a fixed order.
"""

from __future__ import annotations

import random
import re

from .sayings import extra, phone_number

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
