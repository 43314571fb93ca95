"""Every shell and HTTP example of README.md and docs/*.md, run against a real timefuse.

Each file's runnable blocks run in order in one POSIX shell, against the ``timefuse serve``
its ``server`` blocks start (a plain one otherwise), with Kafka or PostgreSQL when a block
says it needs them; each answer is checked against the shape the docs show. The convention
is in docs/testing.md; tests/docs/test_convention.py checks it without running anything.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.doc_examples import ROOT, doc_files, read_blocks
from tests.support.doc_runner import Services, run_file

pytestmark = pytest.mark.slow


def _runs(path: Path) -> bool:
    return any(b.runnable and b.annotation.skip is None for b in read_blocks(path))


def _needs(path: Path) -> frozenset[str]:
    return frozenset().union(*(b.annotation.needs for b in read_blocks(path)))


def _marks(path: Path) -> list[pytest.MarkDecorator]:
    needs = _needs(path)
    return [getattr(pytest.mark, name) for name in sorted(needs)]


FILES = [
    pytest.param(path, id=str(path.relative_to(ROOT)), marks=_marks(path))
    for path in doc_files()
    if _runs(path)
]


@pytest.mark.parametrize("path", FILES)
def test_the_examples_of_the_file_hold(
    path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    needs = _needs(path)
    services = Services()
    if "kafka" in needs:
        services.kafka = request.getfixturevalue("kafka").bootstrap_servers
        services.topic_prefix = f"doc-{uuid.uuid4().hex[:8]}"
    if "postgres" in needs:
        services.database_url = request.getfixturevalue("postgres_dsn")
    skipped = run_file(path, tmp_path, services)
    for reason in skipped:
        print(f"not run: {reason}")
