"""``timefuse schedules``: schedules as code, kept in a file beside the code that needs them.

``apply FILE`` declares every schedule of a TOML or YAML file through the REST API (each by
its key, so applying the same file again changes nothing) and, with ``--prune``, deletes the
schedules of the file's sources that it no longer lists. ``list`` prints the schedules with
their next run. Both talk to a running timefuse (``--url``, ``--api-key``), so the API's keys
and checks apply as to any client.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

DEFAULT_URL = "http://127.0.0.1:8080"
PATH = "/api/v1/schedules"
TIMEOUT_SECONDS = 30.0
PAGE = 1000

FILE_HELP = """\
The file holds a list of schedules and optional defaults for them (TOML shown; YAML has the
same shape). Each schedule has the fields of POST /api/v1/schedules:

  [defaults]                  # optional: merged into every schedule (event too, field by field)
  source = "billing"
  timezone = "Europe/Berlin"

  [[schedules]]
  key = "nightly-invoices"
  cron = "0 2 * * *"
  [schedules.event]
  delivery_type = "http"
  destination = "https://billing.internal/run"
  payload = { job = "invoices" }
"""


class ScheduleFileError(ValueError):
    """The file can't be read as schedules; the message says where."""


Transport = Callable[[str, str, Mapping[str, Any] | None], tuple[int, dict[str, Any]]]


def http_transport(url: str, api_key: str | None) -> Transport:
    """Requests to the timefuse at ``url``: (status, decoded envelope) per call."""
    base = url.rstrip("/")

    def call(method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method)
        if body is not None:
            request.add_header("content-type", "application/json")
        if api_key:
            request.add_header("authorization", f"Bearer {api_key}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                return answer.status, _decoded(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decoded(exc.read())

    return call


def _decoded(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"message": str(value)[:200]}


# -- the file ----------------------------------------------------------------------------------


def _plain(value: object) -> object:
    """A value from TOML or YAML as JSON would carry it (date-times as ISO-8601 text)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def read_file(path: Path) -> list[dict[str, Any]]:
    """The schedules ``path`` declares, defaults merged in; :class:`ScheduleFileError` if it
    isn't a schedules file (the message names the problem)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ScheduleFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            document: object = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text)
        else:
            raise ScheduleFileError(f"{path}: the file must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ScheduleFileError(f"{path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError, without importing yaml for TOML files
        raise ScheduleFileError(f"{path}: {exc}") from None
    return _schedules_of(document, path)


def _schedules_of(document: object, path: Path) -> list[dict[str, Any]]:
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ScheduleFileError(f"{path}: expected a table with a 'schedules' list")
    unknown = set(document) - {"defaults", "schedules"}
    if unknown:
        raise ScheduleFileError(f"{path}: unknown top-level entries: {', '.join(sorted(unknown))}")
    defaults = _plain(document.get("defaults") or {})
    entries = _plain(document.get("schedules") or [])
    if not isinstance(defaults, dict):
        raise ScheduleFileError(f"{path}: 'defaults' must be a table")
    if not isinstance(entries, list):
        raise ScheduleFileError(f"{path}: 'schedules' must be a list of tables")
    found: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ScheduleFileError(f"{path}: schedule {index + 1} is not a table")
        schedule: dict[str, Any] = {**defaults, **entry}
        shared, own = defaults.get("event"), entry.get("event")
        if isinstance(shared, dict) and isinstance(own, dict):
            schedule["event"] = {**shared, **own}
        name = (str(schedule.get("source")), str(schedule.get("key")))
        if name in seen:
            raise ScheduleFileError(f"{path}: {name[0]}/{name[1]} is declared twice")
        seen.add(name)
        found.append(schedule)
    return found


# -- apply and list ----------------------------------------------------------------------------


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0


def _errors(answer: Mapping[str, Any]) -> str:
    listed = answer.get("errors") or []
    if listed:
        return "; ".join(f"{e.get('field')}: {e.get('message')}" for e in listed)
    return str(answer.get("message") or "no answer")


def apply(schedules: list[dict[str, Any]], call: Transport, *, prune: bool, out: TextIO) -> Outcome:
    """Declare each schedule; with ``prune``, delete the file's sources' other schedules
    (only when every declaration went through)."""
    outcome = Outcome()
    for schedule in schedules:
        name = f"{schedule.get('source')}/{schedule.get('key')}"
        status, answer = call("POST", PATH, schedule)
        if status == 201:
            outcome.created += 1
            print(f"created   {name}", file=out)
        elif status == 200:
            changed = answer.get("message") != "schedule unchanged"
            if changed:
                outcome.updated += 1
            else:
                outcome.unchanged += 1
            print(f"{'updated' if changed else 'unchanged':<9} {name}", file=out)
        else:
            outcome.failed += 1
            print(f"FAILED    {name} ({status}): {_errors(answer)}", file=out)
    if not prune:
        return outcome
    if outcome.failed:
        print("not pruning: some schedules were not applied", file=out)
        return outcome
    sources = sorted({str(s.get("source")) for s in schedules})
    kept = {(str(s.get("source")), str(s.get("key"))) for s in schedules}
    for source in sources:
        for found in _listed(call, {"source": source}):
            if (found["source"], found["key"]) in kept:
                continue
            status, answer = call("DELETE", f"{PATH}/{found['id']}", None)
            if status == 200:
                outcome.deleted += 1
                print(f"deleted   {found['source']}/{found['key']}", file=out)
            else:
                outcome.failed += 1
                name = f"{found['source']}/{found['key']}"
                print(f"FAILED    deleting {name}: {_errors(answer)}", file=out)
    return outcome


class ApiFailure(Exception):
    """The API refused a read; the message says why."""


def _listed(call: Transport, params: Mapping[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
        status, answer = call("GET", f"{PATH}?{urllib.parse.urlencode(query)}", None)
        if status != 200:
            raise ApiFailure(f"listing schedules failed ({status}): {_errors(answer)}")
        page = answer["data"]
        found.extend(page["schedules"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def print_list(call: Transport, params: Mapping[str, str], out: TextIO) -> int:
    schedules = _listed(call, params)
    rows = [("SOURCE", "KEY", "STATE", "RULE", "TIMEZONE", "NEXT RUN")]
    for s in schedules:
        rule = s["cron"] if s["cron"] is not None else f"every {s['every_seconds']} s"
        rows.append(
            (s["source"], s["key"], s["state"], rule, s["timezone"], s["next_run_at"] or "-")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
    return len(schedules)


# -- the command -------------------------------------------------------------------------------


def add_schedules_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "declare schedules from a file (schedules as code) and list them"
    parser = commands.add_parser("schedules", help=text, description=text)
    actions = parser.add_subparsers(dest="schedules_action", metavar="ACTION", required=True)
    apply_parser = actions.add_parser(
        "apply",
        help="declare every schedule of a TOML or YAML file (by key: applying it again "
        "changes nothing)",
        description=FILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply_parser.add_argument("file", type=Path, help="a .toml, .yaml or .yml file")
    apply_parser.add_argument(
        "--prune",
        action="store_true",
        help="also delete the schedules of the file's sources that it doesn't list",
    )
    list_parser = actions.add_parser("list", help="print the schedules with their next run")
    list_parser.add_argument("--source", help="only this source's schedules")
    list_parser.add_argument("--state", choices=["active", "paused", "ended"], help="only these")
    for sub in (apply_parser, list_parser):
        sub.add_argument(
            "--url",
            default=os.environ.get("TIMEFUSE_URL", DEFAULT_URL),
            help=f"the timefuse API (TIMEFUSE_URL; default {DEFAULT_URL})",
        )
        sub.add_argument(
            "--api-key",
            default=os.environ.get("TIMEFUSE_API_KEY"),
            help="an API key (TIMEFUSE_API_KEY); apply needs the submit role (cancel too "
            "for --prune)",
        )


def run_schedules_command(
    args: argparse.Namespace, call: Transport | None = None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    call = call or http_transport(args.url, args.api_key)
    try:
        if args.schedules_action == "list":
            params = {
                name: value
                for name, value in (("source", args.source), ("state", args.state))
                if value
            }
            print_list(call, params, out)
            return 0
        schedules = read_file(args.file)
        outcome = apply(schedules, call, prune=args.prune, out=out)
    except ScheduleFileError as exc:
        print(f"timefuse: {exc}", file=sys.stderr)
        return 2
    except ApiFailure as exc:
        print(f"timefuse: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"timefuse: cannot reach timefuse at {args.url}: {reason}", file=sys.stderr)
        return 1
    print(
        f"{outcome.created} created, {outcome.updated} updated, {outcome.unchanged} unchanged, "
        f"{outcome.deleted} deleted, {outcome.failed} failed",
        file=out,
    )
    return 1 if outcome.failed else 0
