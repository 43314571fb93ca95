"""The one-dispatcher-per-SQLite-file lock (timefuse.adapters.sqlite.dispatch_lock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from timefuse.adapters.sqlite import DispatchLockError, DispatchLockHeld, dispatch_lock


def test_the_lock_is_made_beside_a_database_whose_directory_does_not_exist_yet(
    tmp_path: Path,
) -> None:
    database = tmp_path / "new" / "dir" / "timefuse.db"
    with dispatch_lock(str(database)) as lock:
        assert lock == f"{database}.dispatch.lock"
        assert Path(lock).exists()


def test_a_second_holder_is_refused_naming_the_database(tmp_path: Path) -> None:
    database = str(tmp_path / "timefuse.db")
    with dispatch_lock(database), pytest.raises(DispatchLockHeld, match="another process"):
        with dispatch_lock(database):
            pass


def test_a_lock_that_can_not_be_made_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    database = blocker / "timefuse.db"
    with pytest.raises(DispatchLockError) as caught:
        with dispatch_lock(str(database)):
            pass
    assert str(caught.value).startswith(f"can't create the dispatch lock {database}.dispatch.lock")
