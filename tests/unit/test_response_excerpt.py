"""The excerpt of a receiver's answer kept with an attempt and sent in completion notices."""

from __future__ import annotations

from timefuse.domain.callback import RESPONSE_EXCERPT_BYTES, response_excerpt


def test_an_empty_answer_has_no_excerpt() -> None:
    assert response_excerpt(b"") is None


def test_a_short_answer_is_kept_whole_as_text() -> None:
    assert response_excerpt(b'{"ok": true}') == '{"ok": true}'


def test_a_long_answer_is_cut_to_the_excerpt_size() -> None:
    assert response_excerpt(b"x" * (RESPONSE_EXCERPT_BYTES + 500)) == "x" * RESPONSE_EXCERPT_BYTES


def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    assert response_excerpt(b"caf\xe9 \xff ok") == "caf\ufffd \ufffd ok"


def test_a_character_cut_in_half_by_the_size_becomes_a_replacement_character() -> None:
    body = b"a" * (RESPONSE_EXCERPT_BYTES - 1) + "é".encode()  # é is 2 bytes: its first kept

    assert response_excerpt(body) == "a" * (RESPONSE_EXCERPT_BYTES - 1) + "\ufffd"
