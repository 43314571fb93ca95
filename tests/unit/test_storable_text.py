"""Text every store can keep: NUL and unpaired surrogates become U+FFFD."""

from __future__ import annotations

import pytest

from timefuse.domain.text import storable


@pytest.mark.parametrize("code_point", [0xD800, 0xDBFF, 0xDC00, 0xDFFF], ids=hex)
def test_an_unpaired_surrogate_anywhere_in_the_range_becomes_the_replacement_character(
    code_point: int,
) -> None:
    assert storable(f"a{chr(code_point)}b") == "a\ufffdb"


def test_text_that_encodes_as_utf_8_is_kept_as_it_is() -> None:
    assert storable("caf\u00e9 \U0001f600 \uffff") == "caf\u00e9 \U0001f600 \uffff"
