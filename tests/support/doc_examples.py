"""The examples of README.md and docs/*.md, read as tests (the convention: docs/testing.md).

Every fenced block has a language. Blocks tagged ``sh`` (or ``shell``) and ``http`` are
examples the suite runs against a ``timefuse serve`` it starts; any other tag (``text``,
``json``, ``toml``, ``python``...) is not run. An HTML comment right above a block's fence
tells the runner more::

    <!-- doc-test: server -->                the block starts timefuse (see ServerCommand)
    <!-- doc-test: background -->            runs beside the others until the file ends
    <!-- doc-test: needs=kafka,postgres -->  the services it needs are started for it
    <!-- doc-test: skip="why" -->            not run, for the reason given
    <!-- doc-test: timeout=60 -->            seconds it may take (default 30)

Inside a ``sh`` block, a comment line right after a command states what the commands since
the previous such line print (:class:`Expectation`). An ``http`` block is a request, then the
answer's status line, headers and body shape.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = frozenset({"sh", "shell", "http"})
# Tags that would run in another shell than the POSIX one examples are promised to work in.
REFUSED = {"bash": "sh", "zsh": "sh", "console": "sh (without prompts)", "shell-session": "sh"}
KEYS = frozenset({"skip", "server", "background", "needs", "timeout"})
SERVICES = frozenset({"kafka", "postgres"})
ELLIPSIS = "…"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_ANNOTATION = re.compile(r"^\s*<!--\s*doc-test:(?P<body>.*?)-->\s*$")
_STATUS = re.compile(r"^# (?P<status>\d{3})(?:\s+(?P<rest>[\[{].*))?$")
_HTTP_STATUS = re.compile(r"^HTTP/\d(?:\.\d)? (?P<status>\d{3})\b")
# A command line a reader would run (after a prompt or variables set for it): such a line in
# a block the suite doesn't run is an example nobody checks.
_COMMAND = re.compile(
    r"^\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
    r"(?:curl|timefuse|\.venv/bin/\S+|python3? -m timefuse)(?:\s|$)"
)


class DocFormatError(ValueError):
    """A block breaks the convention; the message says where and how."""


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# -- blocks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    skip: str | None = None
    server: bool = False
    background: bool = False
    needs: frozenset[str] = frozenset()
    timeout: float = 30.0


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, from 1
    info: str
    text: str
    annotation: Annotation

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.strip() else ""

    @property
    def runnable(self) -> bool:
        return self.language in RUNNABLE

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_annotation(body: str, where: str) -> Annotation:
    try:
        words = shlex.split(body)
    except ValueError as exc:
        raise DocFormatError(f"{where}: doc-test comment: {exc}") from None
    values: dict[str, Any] = {}
    for word in words:
        key, has_value, value = word.partition("=")
        if key not in KEYS:
            raise DocFormatError(f"{where}: unknown doc-test key {key!r} (known: {sorted(KEYS)})")
        if key in ("server", "background"):
            values[key] = True
        elif not has_value or not value.strip():
            raise DocFormatError(f"{where}: doc-test {key} needs a value ({key}=...)")
        elif key == "skip":
            if len(value.strip()) < 10:
                raise DocFormatError(f"{where}: skip needs a reason, not {value!r}")
            values["skip"] = value.strip()
        elif key == "needs":
            needs = frozenset(v.strip() for v in value.split(",") if v.strip())
            if not needs <= SERVICES:
                raise DocFormatError(f"{where}: needs= takes {sorted(SERVICES)}, not {value!r}")
            values["needs"] = needs
        else:
            values["timeout"] = float(value)
    return Annotation(**values)


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the doc-test comment above each."""
    lines = path.read_text("utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        annotation = Annotation()
        previous = lines[index - 1] if index else ""
        found = _ANNOTATION.match(previous)
        where = f"{path.relative_to(ROOT)}:{index + 1}"
        if found is not None:
            annotation = parse_annotation(found["body"], where)
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence[0] * len(fence)):
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        if end == len(lines):
            raise DocFormatError(f"{where}: the block is never closed")
        blocks.append(Block(path, index + 1, opening["info"].strip(), "\n".join(body), annotation))
        index = end + 1
    return blocks


def convention_problems(blocks: Iterable[Block]) -> Iterator[str]:
    """Every way these blocks break the convention (see docs/testing.md)."""
    for block in blocks:
        language, note = block.language, block.annotation
        if not language:
            yield (
                f"{block.where}: a fenced block needs a language: sh or http for an example "
                "the suite runs, text, json, toml, python... for one it doesn't"
            )
        elif language in REFUSED:
            yield f"{block.where}: tag it {REFUSED[language]}: examples run in a POSIX shell"
        if not block.runnable and note != Annotation():
            yield f"{block.where}: a doc-test comment above a {language or 'bare'} block"
        command = unrun_command(block)
        if command is not None:
            yield (
                f"{block.where}: a {language or 'bare'} block holding a command ({command!r}): "
                'tag it sh so the suite runs it, or sh with <!-- doc-test: skip="why" -->'
            )
        if note.server and note.background:
            yield f"{block.where}: a block is either the server or in the background"
        if block.runnable and note.skip is None:
            try:
                steps(block)
                if note.server:
                    ServerCommand.parse(block)
            except DocFormatError as exc:
                yield str(exc)


def unrun_command(block: Block) -> str | None:
    """The first command line of a block the suite doesn't run (``None``: none).

    A block that shows Markdown with fenced blocks of its own (how to write an example) is
    about the convention, not an example: its lines are not commands.
    """
    if block.runnable or block.language in REFUSED:
        return None
    lines = block.text.splitlines()
    if any(_FENCE.match(line) for line in lines):
        return None
    return next((line.strip() for line in lines if _COMMAND.match(line)), None)


# -- what a block says it prints ------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What one step prints: ``status`` (the last curl's), a JSON ``shape``, or ``lines``.

    Written as comment lines right after the commands:

    * ``# {"success":true,"data":{"id":"019…",…},…}``: the step's last JSON document has this
      shape (``…`` in a string: any text there; as a member or an item: more may follow; as a
      value: anything). A shape may go on over the next comment lines.
    * ``# 202 {...}`` or ``# 404``: and the last HTTP status a curl of the step got.
    * ``# > text``: one line of plain output, ``…`` standing for any text (a line ``# > …``
      for any number of lines).
    """

    line: int
    status: int | None = None
    shape: Any = None
    has_shape: bool = False
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """Commands, and what they must print (``None``: not checked)."""

    commands: str
    expect: Expectation | None


def steps(block: Block) -> list[Step]:
    """The block cut into steps at its expectation lines."""
    if block.language == "http":
        return [http_step(block)]
    out: list[Step] = []
    pending: list[str] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].rstrip()
        expect, index = _expectation_at(lines, index, block)
        if expect is None:
            pending.append(line)
            index += 1
            continue
        out.append(Step("\n".join(pending), expect))
        pending = []
    if any(line.strip() for line in pending):
        out.append(Step("\n".join(pending), None))
    return out


def _expectation_at(lines: list[str], index: int, block: Block) -> tuple[Expectation | None, int]:
    line = lines[index].rstrip()
    where = f"{block.where} (line {index + 1} of the block)"
    if line.startswith("# > "):
        texts = []
        while index < len(lines) and lines[index].startswith("# > "):
            texts.append(lines[index][4:])
            index += 1
        return Expectation(index, lines=tuple(texts)), index
    status_match = _STATUS.match(line)
    if status_match is not None:
        status = int(status_match["status"])
        rest = status_match["rest"]
        if rest is None:
            return Expectation(index, status=status), index + 1
        text, index = _shape_text(lines, index, rest)
        return Expectation(index, status, parse_shape(text, where), True), index
    if line.startswith(("# {", "# [")):
        text, index = _shape_text(lines, index, line[2:])
        return Expectation(index, shape=parse_shape(text, where), has_shape=True), index
    return None, index


def _shape_text(lines: list[str], index: int, first: str) -> tuple[str, int]:
    """A shape written over one comment line or several (until its brackets balance)."""
    text = first
    index += 1
    while _depth(text) > 0 and index < len(lines) and lines[index].startswith("#"):
        text += lines[index][1:]
        index += 1
    return text, index


def _depth(text: str) -> int:
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


# -- shapes ---------------------------------------------------------------------------------

_ANY = "\x00any"  # ``…`` as a value
_MORE = "\x00more"  # ``…`` as a member of an object or an item of an array


def parse_shape(text: str, where: str) -> Any:
    """JSON with ``…`` where anything may stand (see :class:`Expectation`)."""
    out: list[str] = []
    in_string, escaped = False, False
    stack: list[str] = []
    for char in text:
        if in_string:
            out.append(char)
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
        if char == ELLIPSIS:
            before = "".join(out).rstrip()
            in_object = bool(stack) and stack[-1] == "{"
            member = before.endswith(("{", ",")) and in_object
            out.append(json.dumps(_MORE) + ": null" if member else json.dumps(_ANY))
            if not member and before.endswith(("[", ",")) and stack and stack[-1] == "[":
                out[-1] = json.dumps(_MORE)
            continue
        out.append(char)
    try:
        return json.loads("".join(out))
    except ValueError as exc:
        raise DocFormatError(f"{where}: the shape {text!r} is not JSON with …: {exc}") from None


def shape_problems(shape: Any, value: Any, at: str = "$") -> list[str]:
    """How ``value`` differs from ``shape`` (empty when it matches)."""
    if shape == _ANY:
        return []
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{at}: expected an object, got {_short(value)}"]
        problems: list[str] = []
        open_ended = _MORE in shape
        for key, expected in shape.items():
            if key == _MORE:
                continue
            if key not in value:
                problems.append(f"{at}: no member {key!r}")
            else:
                problems += shape_problems(expected, value[key], f"{at}.{key}")
        extra = sorted(set(value) - set(shape))
        if extra and not open_ended:
            problems.append(f"{at}: members the docs don't show: {extra} (end with …)")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{at}: expected an array, got {_short(value)}"]
        open_ended = bool(shape) and shape[-1] == _MORE
        items = shape[:-1] if open_ended else shape
        if len(value) < len(items) or (not open_ended and len(value) != len(items)):
            more = "+" if open_ended else ""
            return [f"{at}: expected {len(items)} items{more}, got {len(value)}"]
        problems = []
        for n, expected in enumerate(items):
            problems += shape_problems(expected, value[n], f"{at}[{n}]")
        return problems
    if isinstance(shape, str) and ELLIPSIS in shape:
        if not isinstance(value, str) or not text_matches(shape, value):
            return [f"{at}: expected {shape!r}, got {_short(value)}"]
        return []
    if shape != value or type(shape) is not type(value):
        return [f"{at}: expected {shape!r}, got {_short(value)}"]
    return []


def text_matches(pattern: str, text: str) -> bool:
    parts = [re.escape(part) for part in pattern.split(ELLIPSIS)]
    return re.fullmatch(".*".join(parts), text, flags=re.DOTALL) is not None


def lines_match(patterns: Iterable[str], lines: list[str]) -> bool:
    regex = "".join(
        r"(?:[^\n]*\n)*"
        if p.strip() == ELLIPSIS
        else ".*".join(map(re.escape, p.split(ELLIPSIS))) + r"\n"
        for p in patterns
    )
    return re.fullmatch(regex, "".join(f"{line}\n" for line in lines), flags=0) is not None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) < 200 else text[:200] + "…"


def last_json(text: str) -> Any:
    """The last JSON document in ``text`` (outputs of several commands may precede it)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    index = 0
    while index < len(text):
        if text[index] in "[{":
            try:
                value, end = decoder.raw_decode(text, index)
            except ValueError:
                index += 1
                continue
            found.append(value)
            index = end
        else:
            index += 1
    if not found:
        raise AssertionError(f"no JSON in the output: {text[-500:]!r}")
    return found[-1]


# -- http blocks ----------------------------------------------------------------------------


def http_step(block: Block) -> Step:
    """An ``http`` block as one curl command, and the answer it shows as the expectation."""
    lines = block.text.splitlines()
    answer = next((n for n, line in enumerate(lines) if _HTTP_STATUS.match(line)), None)
    request = lines if answer is None else lines[:answer]
    if not request or len(request[0].split()) < 2:
        raise DocFormatError(f"{block.where}: an http block starts with METHOD PATH")
    method, target = request[0].split()[:2]
    headers: list[str] = []
    body_at = len(request)
    for n, line in enumerate(request[1:], start=1):
        if not line.strip():
            body_at = n + 1
            break
        name = line.partition(":")[0].strip().lower()
        if name != "host":
            headers.append(line)
    body = "\n".join(request[body_at:]).strip()
    if not target.startswith("http"):
        target = f"http://localhost:8080{target}"
    command = ["curl -sS -i", f"-X {method}", _double_quoted(target)]
    command += [f"-H {_double_quoted(h)}" for h in headers]
    if body:
        command.append("--data-binary @- <<DOC_TEST_BODY\n" + body + "\nDOC_TEST_BODY")
    expect = None
    if answer is not None:
        expect = _http_answer(lines[answer:], block)
    return Step(" ".join(command), expect)


def _double_quoted(text: str) -> str:
    # Variables ($KEY) expand, as a reader's shell would expand them; nothing else does.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{escaped}"'


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    shape: Any
    has_shape: bool


def _http_answer(lines: list[str], block: Block) -> Expectation:
    status_match = _HTTP_STATUS.match(lines[0])
    assert status_match is not None
    headers: dict[str, str] = {}
    body_at = len(lines)
    for n, line in enumerate(lines[1:], start=1):
        if not line.strip():
            body_at = n + 1
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = "\n".join(lines[body_at:]).strip()
    shape = parse_shape(body, block.where) if body else None
    answer = HttpAnswer(int(status_match["status"]), headers, shape, bool(body))
    return Expectation(0, status=answer.status, shape=answer, has_shape=True)


def split_http_output(text: str) -> tuple[int, dict[str, str], str]:
    """curl -i's output: the final answer's status, headers and body."""
    text = text.replace("\r\n", "\n")
    # Interim answers (100 Continue) come first, each ending with a blank line.
    while re.match(r"HTTP/\S+ 1\d\d", text):
        text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    head, _, body = text.partition("\n\n")
    first, *rest = head.split("\n")
    status_match = _HTTP_STATUS.match(first)
    if status_match is None:
        raise AssertionError(f"not an HTTP answer: {text[:300]!r}")
    headers = {}
    for line in rest:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_match["status"]), headers, body


# -- the server a file's examples run against -----------------------------------------------


@dataclass(frozen=True)
class ServerCommand:
    """A ``server`` block: ``[VAR=value ...] make run`` or ``... timefuse serve [options]``.

    The runner starts ``timefuse serve`` itself with those variables (addresses adapted),
    on its own port, in the file's working directory.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, block: Block) -> ServerCommand:
        lines = [
            line for line in block.text.splitlines() if line.strip() and not line.startswith("#")
        ]
        if len(lines) != 1:
            raise DocFormatError(f"{block.where}: a server block holds one command line")
        words = shlex.split(lines[0], comments=True)
        env: dict[str, str] = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if words == ["make", "run"]:
            return cls(env)
        if words[:1] in (["timefuse"], [".venv/bin/timefuse"]) and words[1:2] == ["serve"]:
            args = tuple(words[2:])
            return cls(env, _without_port(args))
        raise DocFormatError(
            f"{block.where}: a server block runs `make run` or `timefuse serve`, not {lines[0]!r}"
        )


def _without_port(args: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--port", "--host"):
            skip = True
        elif not arg.startswith(("--port=", "--host=")):
            out.append(arg)
    return tuple(out)


# -- addresses ------------------------------------------------------------------------------

_ADDRESS = re.compile(r"(?P<host>localhost|127\.0\.0\.1):(?P<port>\d{2,5})\b")
_PYTHON_ADDRESS = re.compile(r'(?P<host>"127\.0\.0\.1"|\'127\.0\.0\.1\'), (?P<port>\d{2,5})\b')
_POSTGRES_URL = re.compile(r"postgres(?:ql)?://[^\s'\"]+")


@dataclass
class Addresses:
    """The doc's ports (8080: timefuse, 9092: Kafka, others: free ports) and URLs as the test
    has them."""

    ports: dict[int, int]
    database_url: str | None = None

    def adapt(self, text: str, free_port: Any) -> str:
        def port_of(doc_port: int) -> int:
            if doc_port not in self.ports:
                self.ports[doc_port] = free_port()
            return self.ports[doc_port]

        text = _ADDRESS.sub(lambda m: f"127.0.0.1:{port_of(int(m['port']))}", text)
        text = _PYTHON_ADDRESS.sub(lambda m: f"{m['host']}, {port_of(int(m['port']))}", text)
        if self.database_url is not None:
            text = _POSTGRES_URL.sub(self.database_url, text)
        return text
