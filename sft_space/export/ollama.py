"""Ollama's Modelfile beside a GGUF file: its TEMPLATE derived by rendering the chat template on conversations with
sentinel contents, checked by rendering both (render_ollama_template interprets the Go-template subset it
writes), the stop tokens, a SYSTEM prompt the training data shared, and the README snippet of the export.
"""

from __future__ import annotations

import json
import re

SENTINELS = ("QZSYSTEMQZ", "QZFIRSTQZ", "QZANSWERQZ", "QZSECONDQZ")  # contents no template changes


def _render(tokenizer, messages, generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _pieces(text: str, sentinels) -> list[str] | None:
    """The text between the sentinels, in order; None when they do not all appear once, in order."""
    pieces = []
    for sentinel in sentinels:
        before, found, text = text.partition(sentinel)
        if not found or sentinel in text:
            return None
        pieces.append(before)
    return pieces + [text]


def ollama_template(tokenizer) -> str | None:
    """A Go template (Ollama's TEMPLATE) rendering conversations as the chat template does, or None when the chat
    template is not one with a fixed text around each role's content.

    Found by rendering the chat template on conversations with sentinel contents: what comes before and after a
    system, user and assistant content, what starts a conversation with and without a system message (a default
    system prompt shows up there) and the generation prompt.
    """
    system, first, answer, second = SENTINELS
    u = lambda text: {"role": "user", "content": text}  # noqa: E731
    try:
        three = _render(tokenizer, [u(first), {"role": "assistant", "content": answer}, u(second)])
        two = _render(tokenizer, [u(first), {"role": "assistant", "content": answer}])
        with_system = _render(tokenizer, [{"role": "system", "content": system}, u(first)])
        generation = _render(tokenizer, [u(first), {"role": "assistant", "content": answer}, u(second)], True)
    except Exception:  # a template that refuses these conversations (e.g. no system role)
        return None
    g, f, h = (
        _pieces(three, (first, answer, second)),
        _pieces(two, (first, answer)),
        _pieces(with_system, (system, first)),
    )
    if not (g and f and h) or not generation.startswith(three):
        return None
    user_end, answer_end = g[3], f[2]
    if not g[1].startswith(user_end) or not g[2].startswith(answer_end) or not g[0].endswith(g[2][len(answer_end) :]):
        return None
    answer_start = g[1][len(user_end) :]
    user_start = g[2][len(answer_end) :]
    start_without_system = g[0][: len(g[0]) - len(user_start)]
    if not h[1].endswith(user_start) or h[2] != user_end:
        return None
    system_end = h[1][: len(h[1]) - len(user_start)]
    prompt = generation[len(three) :]
    pieces = (h[0], system_end, start_without_system, user_start, user_end, answer_start, answer_end, prompt)
    if any("{{" in p or "}}" in p or '"""' in p for p in pieces):
        return None
    return (
        f"{{{{ if .System }}}}{h[0]}{{{{ .System }}}}{system_end}{{{{ else }}}}{start_without_system}{{{{ end }}}}"
        f'{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{user_start}{{{{ .Content }}}}{user_end}'
        f'{{{{ else if eq .Role "assistant" }}}}{answer_start}{{{{ .Content }}}}{answer_end}{{{{ end }}}}{{{{ end }}}}'
        f"{prompt}"
    )


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_ollama_template(template: str, messages: list[dict]) -> str:
    """A Go template of the subset ollama_template writes, rendered as Ollama renders a chat: .System holds the
    system messages (joined by blank lines), .Messages the others; supports if/else if/else/end on .System and
    `eq .Role "..."`, range over .Messages, .System/.Role/.Content and {{- -}} trimming."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    items, position, trim_next = [], 0, False
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        text = text.lstrip() if trim_next else text
        items.append(("text", text.rstrip() if match.group(1) else text))
        items.append(("action", match.group(2)))
        trim_next, position = bool(match.group(3)), match.end()
    tail = template[position:]
    items.append(("text", tail.lstrip() if trim_next else tail))

    def parse(index: int, stops: tuple) -> tuple[list, int, str | None]:
        nodes = []
        while index < len(items):
            kind, value = items[index]
            if kind == "text":
                nodes.append(("text", value))
                index += 1
                continue
            if value in stops or value.startswith("else"):
                return nodes, index, value
            if value.startswith("if "):
                branches, index = [], index + 1
                condition = value[3:]
                while True:
                    body, index, stop = parse(index, ("end",))
                    branches.append((condition, body))
                    index += 1
                    if stop == "end":
                        break
                    condition = stop[len("else if ") :] if stop.startswith("else if ") else None
                nodes.append(("if", branches))
            elif value == "range .Messages":
                body, index, stop = parse(index + 1, ("end",))
                if stop != "end":
                    raise ValueError("range without end")
                nodes.append(("range", body))
                index += 1
            elif value in (".System", ".Role", ".Content"):
                nodes.append(("var", value[1:]))
                index += 1
            else:
                raise ValueError(f"unsupported template action {{{{ {value} }}}}")
        return nodes, index, None

    def truth(condition: str | None, context: dict) -> bool:
        if condition is None:
            return True
        if condition.startswith(".") and " " not in condition:
            return bool(context.get(condition[1:]))
        match = re.fullmatch(r'eq \.(\w+) "([^"]*)"', condition)
        if not match:
            raise ValueError(f"unsupported condition {condition!r}")
        return context.get(match.group(1)) == match.group(2)

    def run(nodes, context) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "var":
                out.append(str(context.get(node[1], "")))
            elif node[0] == "range":
                for message in context["Messages"]:
                    out.append(run(node[1], {**context, "Role": message["role"], "Content": message["content"]}))
            else:
                for condition, body in node[1]:
                    if truth(condition, context):
                        out.append(run(body, context))
                        break
        return "".join(out)

    nodes, _, _ = parse(0, ())
    return run(nodes, {"System": system, "Messages": rest})


def check_template(template: str | None, tokenizer, conversations: list[list[dict]]) -> dict:
    """Does the Modelfile's TEMPLATE render these conversations (and a multi-turn one with a system prompt) the
    way the chat template does?"""
    if not template:
        return {"matches": False, "checked": 0, "note": "the chat template has no fixed text around each role"}
    cases = list(conversations) + [
        [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a colour."},
        ],
        [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}, {"role": "user", "content": "?"}],
    ]
    differing = [c for c in cases if render_ollama_template(template, c) != _render(tokenizer, c, True)]
    return {"matches": not differing, "checked": len(cases), "differing": len(differing)}


def common_system_prompt(rows: list[dict]) -> str | None:
    """The system prompt every training conversation starts with, if they all share one."""
    prompts = set()
    for row in rows:
        messages = row.get("messages") or []
        prompts.add(messages[0]["content"] if messages and messages[0].get("role") == "system" else None)
        if len(prompts) > 1:
            return None
    return next(iter(prompts), None)


def modelfile_text(file_name: str, template: str | None, stops: list[str], system: str | None) -> str:
    lines = [f"FROM ./{file_name}", ""]
    if template:
        lines += [f'TEMPLATE """{template}"""', ""]
    else:
        lines += ["# No TEMPLATE: Ollama reads the chat template in the file's metadata.", ""]
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    if system and '"""' not in system:
        lines += ["", f'SYSTEM """{system}"""']
    return "\n".join(lines) + "\n"


def readme_text(run_name: str, files: list[str], checked: list[str]) -> str:
    """The export's README: how to run the files with Ollama and llama.cpp, and how they answered when checked."""
    main = files[0]
    lines = [
        f"# {run_name}: GGUF",
        "",
        f"The tuned model (base + LoRA adapter merged) as GGUF: {', '.join(f'`{f}`' for f in files)}. The chat "
        "template and the end-of-turn token are in each file's metadata.",
        "",
        "## Ollama",
        "",
        "```shell",
        f"ollama create {_ollama_name(run_name)} -f Modelfile",
        f"ollama run {_ollama_name(run_name)}",
        "```",
        "",
        "## llama.cpp",
        "",
        "```shell",
        f"llama-cli -m {main} -cnv --jinja",
        f"llama-server -m {main} --jinja --port 8080",
        "```",
        "",
    ]
    if checked:
        lines += ["## Checked", "", *checked, ""]
    return "\n".join(lines)


def _ollama_name(run_name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-")[:60] or "sft-model"
