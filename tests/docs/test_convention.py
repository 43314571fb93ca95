"""The docs' examples follow the convention the suite runs them by (docs/testing.md).

Checked without running anything, so a new example that can't be run, or a block whose
language nobody stated, fails here at once with the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.doc_examples import (
    ROOT,
    Block,
    DocFormatError,
    ServerCommand,
    convention_problems,
    doc_files,
    last_json,
    lines_match,
    parse_shape,
    read_blocks,
    shape_problems,
    split_http_output,
    steps,
)


def _blocks() -> list[Block]:
    return [block for path in doc_files() for block in read_blocks(path)]


def test_every_block_of_the_docs_follows_the_convention() -> None:
    problems = list(convention_problems(_blocks()))
    assert not problems, "\n".join(problems)


# What an example may do that the suite doesn't: load for minutes, install into its
# environment, run this very suite (or mutation testing, hours of it).
UNRUN = (
    "timefuse bench ",
    "pip ",
    ".venv/bin/pip ",
    "apt-get ",
    "make ",
    ".venv/bin/pytest ",
    ".venv/bin/mutmut ",
    ".venv/bin/python scripts/mutation_report.py",
)


def test_only_benchmarks_and_installs_are_left_unrun_and_each_says_why() -> None:
    runnable = [block for block in _blocks() if block.runnable]
    skipped = [block for block in runnable if block.annotation.skip is not None]
    assert len(runnable) - len(skipped) >= 20
    for block in skipped:
        commands = [
            line.strip()
            for line in block.text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        # Variables set for the command (VAR=value timefuse bench ...) don't change what it is.
        bare = [re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+", "", line) for line in commands]
        others = [line for line in bare if not line.startswith(UNRUN) and line[:1] != "-"]
        assert not others, f"{block.where}: not run, yet not a benchmark or an install: {others}"


def test_examples_check_what_they_print() -> None:
    checked = [
        step
        for block in _blocks()
        if block.runnable
        and block.annotation.skip is None
        and not block.annotation.server
        and not block.annotation.background
        for step in steps(block)
        if step.expect is not None
    ]
    assert len(checked) >= 20


# -- the reading of blocks ------------------------------------------------------------------


def _block(tmp_path: Path, text: str) -> list[Block]:
    path = ROOT / "docs" / f".doc-test-{tmp_path.name}.md"
    path.write_text(text)
    try:
        return read_blocks(path)
    finally:
        path.unlink()


def test_a_doc_test_comment_above_a_fence_annotates_the_block(tmp_path: Path) -> None:
    text = (
        "Intro.\n\n<!-- doc-test: needs=kafka timeout=60 -->\n```sh\ncurl -s localhost:8080\n"
        '```\n\n<!-- doc-test: skip="needs a Docker engine" -->\n```sh\ndocker compose up\n```\n'
    )
    first, second = _block(tmp_path, text)
    assert (first.language, first.annotation.needs, first.annotation.timeout) == (
        "sh",
        frozenset({"kafka"}),
        60.0,
    )
    assert second.annotation.skip == "needs a Docker engine"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```\nls\n```\n", "needs a language"),
        ("```bash\nls\n```\n", "tag it sh"),
        ("<!-- doc-test: skip=x -->\n```sh\nls\n```\n", "needs a reason"),
        ("<!-- doc-test: flaky -->\n```sh\nls\n```\n", "unknown doc-test key"),
        ("<!-- doc-test: server -->\n```sh\ndocker run timefuse\n```\n", "server block"),
        ('```sh\ncurl -s x\n# {"a": 1,,}\n```\n', "not JSON"),
        ("```text\ncurl -s localhost:8080/health/ready\n```\n", "holding a command"),
        ("```text\n$ timefuse secrets new\n```\n", "holding a command"),
        ("```json\nTIMEFUSE_UI=off timefuse serve\n```\n", "holding a command"),
        ("```text\n.venv/bin/pytest tests/unit\n```\n", "holding a command"),
    ],
)
def test_a_block_that_breaks_the_convention_is_named(
    tmp_path: Path, text: str, problem: str
) -> None:
    try:
        problems = list(convention_problems(_block(tmp_path, text)))
    except DocFormatError as exc:
        problems = [str(exc)]
    assert any(problem in p for p in problems), problems


def test_text_that_shows_how_to_write_an_example_is_not_an_unrun_example(tmp_path: Path) -> None:
    blocks = _block(
        tmp_path,
        "````text\n```sh\ncurl -s localhost:8080/health/ready\n# 200 {…}\n```\n````\n\n"
        "```text\nmodule  mutants  killed\ntimefuse/domain/event.py  57  12\n```\n",
    )
    assert list(convention_problems(blocks)) == []


def test_a_server_block_gives_the_variables_and_arguments_timefuse_starts_with(
    tmp_path: Path,
) -> None:
    (block,) = _block(
        tmp_path,
        "<!-- doc-test: server -->\n```sh\n"
        "TIMEFUSE_API_KEYS_FILE=keys.toml timefuse serve --port 8080 --insecure-no-auth\n```\n",
    )
    command = ServerCommand.parse(block)
    assert dict(command.env) == {"TIMEFUSE_API_KEYS_FILE": "keys.toml"}
    assert command.args == ("--insecure-no-auth",)


def test_comment_lines_after_commands_are_what_they_print(tmp_path: Path) -> None:
    (block,) = _block(
        tmp_path,
        "```sh\ncurl -s a\ncurl -s b   # a trailing comment checks nothing\n"
        '# 202 {"id": "01…",\n#  …}\n# a remark\ntimefuse secrets new\n# > whsec_…\n```\n',
    )
    first, second = steps(block)
    assert first.commands.splitlines()[0] == "curl -s a"
    assert first.expect is not None
    assert (first.expect.status, first.expect.has_shape) == (202, True)
    assert second.expect is not None
    assert second.expect.lines == ("whsec_…",)
    assert "# a remark" in second.commands


def test_an_http_block_is_a_request_and_the_answer_it_shows(tmp_path: Path) -> None:
    (block,) = _block(
        tmp_path,
        "```http\nPOST /api/v1/events HTTP/1.1\nHost: localhost:8080\n"
        'Authorization: Bearer $KEY\n\n{"a": 1}\n\nHTTP/1.1 202 Accepted\n'
        'Location: /api/v1/events/…\n\n{"success": true, …}\n```\n',
    )
    (step,) = steps(block)
    assert step.commands.startswith('curl -sS -i -X POST "http://localhost:8080/api/v1/events"')
    assert '-H "Authorization: Bearer $KEY"' in step.commands
    assert "Host:" not in step.commands
    assert step.expect is not None
    assert step.expect.status == 202


# -- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "value", "holds"),
    [
        ('{"id": "019…", "status": "PENDING"}', {"id": "0190ab", "status": "PENDING"}, True),
        ('{"id": "019…", "status": "PENDING"}', {"id": "0190ab", "status": "FAILED"}, False),
        ('{"id": "019…"}', {"id": "0190ab", "status": "PENDING"}, False),
        ('{"id": "019…", …}', {"id": "0190ab", "status": "PENDING"}, True),
        ('{"data": …, …}', {"data": [1, 2], "x": None}, True),
        ("[…]", [], True),
        ("[1, …]", [1, 2, 3], True),
        ("[1, …]", [2], False),
        ("[1]", [1, 2], False),
        ('{"n": 1}', {"n": True}, False),
        ('{"n": 1}', {"n": 1.0}, False),
        ('"…"', "anything", True),
    ],
)
def test_a_shape_matches_what_it_shows_and_no_more(shape: str, value: object, holds: bool) -> None:
    assert (not shape_problems(parse_shape(shape, "test"), value)) is holds


def test_the_last_json_document_of_an_output_is_the_one_checked() -> None:
    assert last_json('{"a": 1}\nnoise {not json\n[2, 3]\n') == [2, 3]


def test_text_lines_match_with_ellipses() -> None:
    assert lines_match(["# The key…", "tfk_…", "…"], ["# The key, shown once", "tfk_x", "a", "b"])
    assert not lines_match(["tfk_…"], ["tfk_x", "more"])


def test_curls_answer_is_split_after_interim_answers() -> None:
    text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nLocation: /x\r\n\r\n{}"
    assert split_http_output(text) == (202, {"location": "/x"}, "{}")
