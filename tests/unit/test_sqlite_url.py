"""``sqlite:///`` URLs: which file they name, and which ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from timefuse.adapters.sqlite import SqliteEventStore, from_url, path_from_url
from timefuse.testing.factories import make_event


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///timefuse.db", "timefuse.db"),
        ("sqlite:///data/timefuse.db", "data/timefuse.db"),
        ("sqlite:///./timefuse.db", "./timefuse.db"),
        ("sqlite:////var/lib/timefuse/timefuse.db", "/var/lib/timefuse/timefuse.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_three_slashes_start_a_relative_path_and_four_an_absolute_one(url: str, path: str) -> None:
    assert path_from_url(url) == path


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://localhost/timefuse", "not a SQLite URL"),
        ("timefuse.db", "not a SQLite URL"),
        ("", "not a SQLite URL"),
        ("sqlite://timefuse.db", "three slashes"),
        ("sqlite://host/timefuse.db", "three slashes"),
        ("sqlite:", "three slashes"),
        ("sqlite:///", "names no file"),
        ("sqlite:////", "names no file"),
        ("sqlite:///timefuse.db?mode=ro", "query or fragment"),
        ("sqlite:///timefuse.db#x", "query or fragment"),
    ],
)
def test_refuses_a_url_that_names_no_sqlite_file(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        path_from_url(url)


def test_from_url_builds_an_unopened_store_on_the_named_file() -> None:
    store = from_url("sqlite:////srv/timefuse/events.db")
    assert isinstance(store, SqliteEventStore)
    assert store.path == "/srv/timefuse/events.db"


async def test_a_store_from_a_url_keeps_its_events_across_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/timefuse.db"
    event = make_event()
    store = from_url(url)
    await store.open()
    await store.insert_many([event])
    await store.close()
    assert (tmp_path / "nested" / "dir" / "timefuse.db").is_file()
    reopened = from_url(url)
    await reopened.open()
    try:
        assert await reopened.get(event.id, sources=None) == event
    finally:
        await reopened.close()
