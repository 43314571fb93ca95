"""The console's parts without a browser: sessions, sign-in, read-only keys, figures, filters."""

from __future__ import annotations

import importlib.metadata
import math
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.unit.test_api_harness import EVENTS, Harness, bearer, running_api
from timefuse import hookimpl
from timefuse.config import ApiSettings, ConfigError
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.auth import Role, hash_key, key_entry, load_keys
from timefuse.entrypoints.cli import main
from timefuse.entrypoints.ui.activity import Activity, Tally, percentiles
from timefuse.entrypoints.ui.charts import Line, Series, bar_chart, log_line_chart, nice_ceiling
from timefuse.entrypoints.ui.filters import EXAMINED_PER_PAGE, parse_filter
from timefuse.entrypoints.ui.session import COOKIE
from timefuse.plugins.manager import BUILTIN_ORIGIN
from timefuse.ports.delivery import DeliveryType
from timefuse.ports.store import StoreUnavailable, WorkerBeat
from timefuse.service.metrics import Metrics
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import seed

ROOT = Path(__file__).resolve().parents[2]
ADMIN, AUDITOR = "tfk_unit_admin", "tfk_unit_auditor"
SECRET = "s" * 40


def keys_file(path: Path) -> Path:
    path.write_text(
        key_entry("admin", hash_key(ADMIN), None, [Role.ADMIN])
        + "\n"
        + key_entry("auditor", hash_key(AUDITOR), None, [Role.ADMIN], read_only=True)
    )
    return path


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    env = {"TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml"))}
    async with running_api(tmp_path, env={**env, "TIMEFUSE_UI_SECRET": SECRET}) as harness:
        yield harness


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await client.get("/ui/login")
    token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    return await client.post("/ui/login", data={"csrf": token, "key": key, "next": "/ui/events"})


class TestReadOnlyKeys:
    def test_the_attribute_loads_from_the_keys_file(self, tmp_path: Path) -> None:
        ring = load_keys(keys_file(tmp_path / "keys.toml"))

        auditor = ring.find(AUDITOR)
        admin = ring.find(ADMIN)
        assert auditor is not None
        assert auditor.read_only
        assert admin is not None
        assert not admin.read_only

    @pytest.mark.parametrize("flag", [True, False])
    def test_keys_new_makes_a_read_only_entry_when_asked(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: bool
    ) -> None:
        args = ["keys", "new", "--name", "audit", "--sources", "*", "--roles", "admin"]
        code = main([*args, "--read-only"] if flag else args)

        out = capsys.readouterr().out
        secret = next(line for line in out.splitlines() if line.startswith("tfk_"))
        (tmp_path / "keys.toml").write_text(out.partition("\n\n")[2])
        found = load_keys(tmp_path / "keys.toml").find(secret)
        assert code == 0
        assert found is not None
        assert found.read_only is flag

    def test_a_value_that_is_not_a_boolean_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "keys.toml"
        path.write_text(key_entry("x", hash_key("k"), None, [Role.READ]) + 'read_only = "yes"\n')

        with pytest.raises(ConfigError, match="read_only"):
            load_keys(path)

    async def test_the_api_lets_a_read_only_key_read_and_nothing_else(self, api: Harness) -> None:
        event_id = await api.submitted_id(ADMIN)

        read = await api.client.get(f"{EVENTS}/{event_id}", headers=bearer(AUDITOR))
        cancel = await api.client.delete(f"{EVENTS}/{event_id}", headers=bearer(AUDITOR))
        admin_read = await api.client.get(f"{EVENTS}/admin/destinations", headers=bearer(AUDITOR))

        assert read.status_code == 200
        assert admin_read.status_code == 200
        assert cancel.status_code == 403
        assert "read-only" in cancel.json()["message"]
        stored = await api.store.get(event_id)
        assert stored is not None
        assert stored.status.value == "PENDING"


class TestSignIn:
    async def test_a_valid_key_gets_a_signed_strict_http_only_cookie(self, api: Harness) -> None:
        response = await sign_in(api.client, ADMIN)

        assert response.status_code == 303
        assert response.headers["location"] == "/ui/events"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
        assert ADMIN not in cookie  # the key itself never leaves the sign-in form
        page = await api.client.get("/ui/events")
        assert page.status_code == 200
        assert "admin" in page.text

    async def test_a_wrong_key_is_refused_and_no_page_is_shown(self, api: Harness) -> None:
        response = await sign_in(api.client, "tfk_wrong")
        page = await api.client.get("/ui/events")

        assert response.status_code == 401
        assert page.status_code == 303
        assert page.headers["location"].startswith("/ui/login?next=")

    async def test_after_a_wrong_key_the_form_still_knows_where_to_go(self, api: Harness) -> None:
        response = await sign_in(api.client, "tfk_wrong")

        assert 'name="next" value="/ui/events"' in response.text

    async def test_a_forged_cookie_is_a_visitor_without_a_session(self, api: Harness) -> None:
        await sign_in(api.client, ADMIN)
        value = api.client.cookies[COOKIE]
        api.client.cookies.clear()
        api.client.cookies.set(COOKIE, value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1])

        page = await api.client.get("/ui/events")

        assert page.status_code == 303

    @pytest.mark.parametrize(
        "wanted", ["https://elsewhere.example/", "//elsewhere.example/ui/", "/api/v1/events"]
    )
    async def test_after_signing_in_it_goes_only_to_a_console_page(
        self, api: Harness, wanted: str
    ) -> None:
        page = await api.client.get("/ui/login")
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]

        response = await api.client.post(
            "/ui/login", data={"csrf": token, "key": ADMIN, "next": wanted}
        )

        assert response.headers["location"] == "/ui/"

    async def test_signing_in_without_the_pages_token_is_refused(self, api: Harness) -> None:
        await api.client.get("/ui/login")

        response = await api.client.post("/ui/login", data={"csrf": "x", "key": ADMIN})

        assert response.status_code == 403
        assert (await api.client.get("/ui/events")).status_code == 303  # still signed out

    async def test_a_post_from_another_origin_is_refused_even_with_the_token(
        self, api: Harness
    ) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        page = await api.client.get(f"/ui/events/{event_id}")
        token = page.text.split('name="csrf" value="')[1].split('"')[0]

        response = await api.client.post(
            f"/ui/events/{event_id}/cancel",
            data={"csrf": token},
            headers={"origin": "http://elsewhere.example"},
        )

        assert response.status_code == 403
        stored = await api.store.get(event_id)
        assert stored is not None
        assert stored.status.value == "PENDING"


async def test_the_console_is_absent_when_turned_off(tmp_path: Path) -> None:
    async with running_api(tmp_path, env={"TIMEFUSE_UI": "off"}) as api:
        response = await api.client.get("/ui/")

    assert response.status_code == 404


def test_a_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="TIMEFUSE_UI_SECRET"):
        ApiSettings.from_env({"TIMEFUSE_UI_SECRET": "short"})


class TestFigures:
    @pytest.mark.parametrize(
        ("cumulative", "expected"),
        [
            # 10 observations between 1 s and 2 s: the median is half-way through that bucket.
            ([0, 10, 10, 10], [1.5, 1.9, 1.99]),
            # Half under 1 s, half between 2 s and 5 s.
            ([5, 5, 10, 10], [1.0, 4.4, 4.94]),
        ],
    )
    def test_percentiles_interpolate_within_a_bucket(
        self, cumulative: list[float], expected: list[float]
    ) -> None:
        found = percentiles([1.0, 2.0, 5.0, math.inf], cumulative, (0.5, 0.9, 0.99))

        assert found is not None
        assert [round(p.seconds, 6) for p in found] == expected
        assert not any(p.beyond for p in found)

    def test_a_percentile_past_the_last_bound_says_so(self) -> None:
        found = percentiles([1.0, 2.0, math.inf], [0, 1, 10], (0.5,))

        assert found is not None
        assert found[0].beyond
        assert found[0].seconds == 2.0

    def test_nothing_counted_has_no_percentiles(self) -> None:
        assert percentiles([1.0, math.inf], [0, 0], (0.5,)) is None

    def test_each_minute_keeps_what_the_counters_gained_in_it(self) -> None:
        now = [600.0]  # minute 10
        activity = Activity(Metrics(), clock=lambda: now[0])
        size = len(activity.bounds)
        activity.record(601, Tally(3, 1, 0, [0.0] * size))
        activity.record(659, Tally(5, 2, 1, [0.0] * size))  # minute 10 again
        activity.record(720 + 30, Tally(9, 2, 1, [0.0] * size))  # minute 12
        now[0] = 750.0

        minutes = activity.per_minute()

        assert len(minutes) == 60
        assert [(m, t.submitted, t.delivered, t.failed) for m, t in minutes[-3:]] == [
            (10, 5, 2, 1),
            (11, 0, 0, 0),
            (12, 4, 0, 0),
        ]
        assert activity.last_hour().submitted == 9

    def test_minutes_older_than_an_hour_drop_out(self) -> None:
        now = [0.0]
        activity = Activity(Metrics(), clock=lambda: now[0])
        size = len(activity.bounds)
        activity.record(0, Tally(7, 0, 0, [0.0] * size))
        now[0] = 60 * 60.0

        assert activity.last_hour().submitted == 0

    def test_it_reads_this_process_counters(self) -> None:
        metrics = Metrics()
        metrics.received.labels("http").inc(4)
        metrics.received.labels("kafka").inc(2)
        metrics.delivered.labels("http").inc(3)
        metrics.lateness.labels("http").observe(0.2)

        totals = Activity(metrics).read_metrics()

        assert (totals.submitted, totals.delivered, totals.failed) == (6, 3, 0)
        assert totals.lateness[-1] == 1

    @pytest.mark.parametrize(
        ("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (12, 20), (480, 500), (501, 1000)]
    )
    def test_an_axis_top_is_a_round_number(self, value: float, top: float) -> None:
        assert nice_ceiling(value) == top

    def test_a_chart_has_one_bar_per_busy_minute_and_a_text_alternative(self) -> None:
        svg = str(bar_chart(Series("sent", "Sent <b>", [0, 2, 0, 5])))

        assert svg.count("<rect") == 2
        assert "Sent &lt;b&gt; per minute" in svg
        assert "7 in all; at most 5 in one minute" in svg

    def test_a_line_breaks_where_a_minute_has_no_value_and_a_lone_value_is_a_dot(self) -> None:
        values = [None, 0.02, 0.03, None, None, 1.5, None, 0.2, 0.25, 0.3]
        svg = str(log_line_chart("c", "Late <i>", [Line("p50", "p50", values)], "about <i>"))

        assert svg.count("<polyline") == 2  # minutes 1-2 and 7-9
        assert svg.count("<circle") == 1  # minute 5 alone
        assert [p.count(",") for p in svg.split('points="')[1:]] == [2, 3]
        assert "Late &lt;i&gt;" in svg
        assert "about &lt;i&gt;" in svg

    def test_a_log_axis_spans_the_decades_of_its_values(self) -> None:
        svg = str(log_line_chart("c", "t", [Line("p99", "p99", [0.004, 42.0])], "d"))
        labels = [part.split("<")[0] for part in svg.split('text-anchor="end">')[1:]]

        # From the decade under the smallest value to the one over the largest; "now" ends.
        assert labels == ["1 ms", "10 ms", "100 ms", "1 s", "10 s", "100 s", "now"]
        # A larger value is drawn higher (a smaller y).
        points = svg.split('points="')[1].split('"')[0].split()
        (_, y_small), (_, y_large) = (map(float, point.split(",")) for point in points)
        assert y_large < y_small


class TestFilters:
    def test_a_time_without_an_offset_is_read_as_utc(self) -> None:
        chosen = parse_filter({"from": "2030-01-02T03:04", "to": "2030-01-03T00:00:00+02:00"})

        assert chosen.scheduled_from == datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
        assert chosen.scheduled_to == datetime(2030, 1, 2, 22, 0, tzinfo=UTC)
        assert chosen.errors == {}

    def test_bad_values_are_reported_by_field(self) -> None:
        chosen = parse_filter({"status": "LOST", "from": "yesterday", "cursor": "nope"})

        assert set(chosen.errors) == {"status", "from", "cursor"}
        assert chosen.status is None
        assert chosen.scheduled_from is None
        assert chosen.cursor is None

    def test_an_end_before_the_start_is_refused(self) -> None:
        chosen = parse_filter({"from": "2030-01-02T00:00", "to": "2030-01-01T00:00"})

        assert set(chosen.errors) == {"to"}

    def test_the_query_string_round_trips(self) -> None:
        chosen = parse_filter(
            {
                "status": "pending",
                "source": "billing",
                "type": "http",
                "destination": "Hooks.Example:8443",
                "from": "2030-01-02T03:04",
                "order": "newest",
                "limit": "100",
            }
        )

        again = parse_filter(dict(parse_qsl(chosen.params())))

        assert again.query() == chosen.query()
        assert again.limit == 100
        assert again.query().descending
        assert again.query().delivery_type == "http"

    @pytest.mark.parametrize(
        ("typed", "key", "host", "prefix"),
        [
            # The start of a URL: destinations written so.
            ("https://hooks.example/orders", None, None, "https://hooks.example/orders"),
            # A host: any port of it, as the dispatcher keys it.
            ("Hooks.Example.", None, "hooks.example", None),
            ("2001:DB8::1", None, "[2001:db8::1]", None),
            # host:port and other delivery types' keys: that key.
            ("hooks.example:0443", "hooks.example:443", None, None),
            ("[::ffff:127.0.0.1]:80", "127.0.0.1:80", None, None),
            ("kafka:orders", "kafka:orders", None, None),
        ],
    )
    def test_a_destination_is_read_as_a_url_start_a_host_or_a_key(
        self, typed: str, key: str | None, host: str | None, prefix: str | None
    ) -> None:
        query = parse_filter({"destination": f"  {typed} "}).query()

        assert (query.destination_key, query.destination_host, query.destination_prefix) == (
            key,
            host,
            prefix,
        )

    def test_a_destination_that_names_nothing_is_reported_beside_its_field(self) -> None:
        chosen = parse_filter({"destination": "hooks.example:http"})

        assert set(chosen.errors) == {"destination"}
        assert chosen.destination == "hooks.example:http"  # left in the field to correct
        query = chosen.query()
        assert (query.destination_key, query.destination_host) == (None, None)

    def test_every_list_page_bounds_the_events_it_looks_at(self) -> None:
        assert parse_filter({}).query().examine_at_most == EXAMINED_PER_PAGE


async def test_the_overview_lists_the_processes_heard_of_with_their_roles(api: Harness) -> None:
    started = datetime.now(UTC)
    await api.store.heartbeat(WorkerBeat("dispatch-7f3a", ("dispatch",), started, in_flight=12))
    await api.store.heartbeat(WorkerBeat("api-01b2", ("api", "maintenance"), started))
    await sign_in(api.client, ADMIN)

    page = (await api.client.get("/ui/")).text
    rows = page.split('<table class="workers">')[1].split("</table>")[0].split("<tr")[2:]

    assert len(rows) == 2
    dispatcher = next(row for row in rows if "dispatch-7f3a" in row)
    assert '<span class="role dispatch">dispatch</span>' in dispatcher
    assert '<td class="num">12</td>' in dispatcher
    assert "api-01b2" in "".join(rows)
    assert "No live process dispatches" not in page


async def test_the_overview_warns_when_no_live_process_dispatches(api: Harness) -> None:
    started = datetime.now(UTC)
    await api.store.heartbeat(WorkerBeat("api-01b2", ("api", "maintenance"), started))
    await sign_in(api.client, ADMIN)

    page = (await api.client.get("/ui/")).text

    assert "No live process dispatches: pending events wait until one does." in page


async def test_a_list_filtered_by_a_rare_receiver_says_how_far_a_page_looked(
    api: Harness,
) -> None:
    now = datetime.now(UTC)
    events = [
        make_event(source="billing", scheduled_at=now + timedelta(seconds=n))
        for n in range(EXAMINED_PER_PAGE + 1)
    ]
    rare = make_event(
        source="billing",
        destination="https://rare.example/x",
        scheduled_at=now + timedelta(seconds=EXAMINED_PER_PAGE + 5),
    )
    await seed(api.store, *events, rare)
    await sign_in(api.client, ADMIN)

    first = await api.client.get("/ui/events", params={"destination": "rare.example"})
    further = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = await api.client.get(further.replace("&amp;", "&"))

    assert "No match yet" in first.text
    assert "rare.example" not in first.text.split("<tbody>")[1].split("</tbody>")[0]
    assert "Look further" in first.text
    assert second.text.count('data-label="External id"') == 1
    assert rare.external_job_id in second.text


async def test_a_store_that_does_not_answer_gives_a_page_saying_so(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sign_in(api.client, ADMIN)

    async def unavailable(**_: object) -> dict[str, int]:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(api.service, "statistics", unavailable)
    response = await api.client.get("/ui/")

    assert response.status_code == 503
    assert "The event store did not answer" in response.text


async def test_the_event_page_shows_its_http_options_and_the_body_sent(api: Harness) -> None:
    await sign_in(api.client, ADMIN)
    http = {"method": "PUT", "headers": {"X-Tenant": "acme"}, "body": "<order id='7'/>"}
    event_id = await api.submitted_id(ADMIN, http=http, payload=None)

    page = await api.client.get(f"/ui/events/{event_id}")

    assert page.status_code == 200
    assert "HTTP request options" in page.text
    assert "&#34;X-Tenant&#34;: &#34;acme&#34;" in page.text
    assert "&lt;order id=&#39;7&#39;/&gt;" in page.text


async def test_a_callbacks_page_links_to_its_parent(api: Harness) -> None:
    from timefuse.domain.callback import callback_event
    from timefuse.domain.status import EventStatus
    from timefuse.testing.factories import make_event

    await sign_in(api.client, ADMIN)
    parent = make_event(callback_url="https://client.example/done")
    child = callback_event(
        parent, EventStatus.COMPLETED, now=parent.created_at, attempts=1, retry_count=0,
        status_code=200, response_excerpt=None, error=None,
    )  # fmt: skip
    assert child is not None
    await api.store.insert_many([parent, child])

    page = await api.client.get(f"/ui/events/{child.id}")

    assert page.status_code == 200
    assert f'/ui/events/{parent.id}"' in page.text


class TestReschedule:
    async def _page_token(self, api: Harness, event_id: str) -> str:
        page = await api.client.get(f"/ui/events/{event_id}")
        return page.text.split('name="csrf" value="')[1].split('"')[0]

    async def test_a_pending_event_is_delivered_at_the_new_time_its_schedule_kept(
        self, api: Harness
    ) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        before = await api.store.get(event_id)
        token = await self._page_token(api, event_id)
        later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)

        response = await api.client.post(
            f"/ui/events/{event_id}/reschedule",
            data={"csrf": token, "due_at": later.strftime("%Y-%m-%dT%H:%M:%S")},
        )
        page = await api.client.get(response.headers["location"])

        assert response.status_code == 303
        assert response.headers["location"] == f"/ui/events/{event_id}?done=rescheduled"
        stored = await api.store.get(event_id)
        assert before is not None
        assert stored is not None
        assert stored.next_attempt_at == later
        assert stored.scheduled_at == before.scheduled_at
        assert "Event rescheduled" in page.text
        shown = later.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"<strong>reschedule to {shown}</strong> by admin (moved)" in page.text
        # The field offers the new time for the next change.
        assert f'value="{later.strftime("%Y-%m-%dT%H:%M:%S")}"' in page.text

    @pytest.mark.parametrize(
        ("typed", "reason"),
        [
            ("2001-01-01T00:00:00", "The new time is in the past."),
            ("9999-01-01T00:00:00", "The new time is more than 3650 days ahead."),
            ("next tuesday", "Use a date and time such as"),
            ("", "Use a date and time such as"),
        ],
    )
    async def test_a_time_out_of_bounds_is_named_beside_the_field_and_nothing_moves(
        self, api: Harness, typed: str, reason: str
    ) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        before = await api.store.get(event_id)
        token = await self._page_token(api, event_id)

        response = await api.client.post(
            f"/ui/events/{event_id}/reschedule", data={"csrf": token, "due_at": typed}
        )

        assert response.status_code == 400
        assert reason in response.text
        assert 'aria-invalid="true"' in response.text
        assert await api.store.get(event_id) == before

    async def test_an_event_no_longer_pending_is_left_alone(self, api: Harness) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        token = await self._page_token(api, event_id)
        await api.client.delete(f"{EVENTS}/{event_id}", headers=bearer(ADMIN))

        response = await api.client.post(
            f"/ui/events/{event_id}/reschedule",
            data={"csrf": token, "due_at": at_hours(3)},
        )
        page = await api.client.get(response.headers["location"])

        assert response.headers["location"].endswith("?done=not-movable")
        assert "only a pending event can be rescheduled" in page.text
        assert 'action="/ui/events/' + event_id + '/reschedule"' not in page.text

    async def test_a_read_only_key_gets_no_form_and_a_403(self, api: Harness) -> None:
        event_id = await api.submitted_id(ADMIN)
        before = await api.store.get(event_id)
        await sign_in(api.client, AUDITOR)
        page = await api.client.get(f"/ui/events/{event_id}")
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]

        response = await api.client.post(
            f"/ui/events/{event_id}/reschedule", data={"csrf": token, "due_at": at_hours(3)}
        )

        assert "/reschedule" not in page.text
        assert response.status_code == 403
        assert await api.store.get(event_id) == before


class TestCancelAndRedeliver:
    async def _post(self, api: Harness, event_id: str, action: str) -> httpx.Response:
        page = await api.client.get(f"/ui/events/{event_id}")
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        return await api.client.post(f"/ui/events/{event_id}/{action}", data={"csrf": token})

    async def test_cancelling_a_pending_event_says_so_on_its_page_and_in_its_log(
        self, api: Harness
    ) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)

        response = await self._post(api, event_id, "cancel")
        page = await api.client.get(response.headers["location"])

        assert response.status_code == 303
        assert response.headers["location"] == f"/ui/events/{event_id}?done=cancelled"
        stored = await api.store.get(event_id)
        assert stored is not None
        assert stored.status.value == "CANCELLED"
        assert "<strong>cancel</strong> by admin (cancelled)" in page.text

    async def test_cancelling_an_event_twice_does_nothing_the_second_time(
        self, api: Harness
    ) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        await self._post(api, event_id, "cancel")

        response = await self._post(api, event_id, "cancel")
        page = await api.client.get(response.headers["location"])

        assert response.headers["location"] == f"/ui/events/{event_id}?done=not-pending"
        assert "only a pending event can be cancelled" in page.text

    async def test_redelivering_a_dead_letter_makes_it_pending_again(self, api: Harness) -> None:
        from timefuse.domain.status import EventStatus

        await sign_in(api.client, ADMIN)
        event_id = await api.attempted(EventStatus.DEAD_LETTER)

        response = await self._post(api, event_id, "redeliver")
        page = await api.client.get(response.headers["location"])

        assert response.headers["location"] == f"/ui/events/{event_id}?done=redelivered"
        stored = await api.store.get(event_id)
        assert stored is not None
        assert stored.status is EventStatus.PENDING
        assert "<strong>redeliver</strong> by admin (redelivered)" in page.text

    async def test_redelivering_a_pending_event_does_nothing(self, api: Harness) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        before = await api.store.get(event_id)

        response = await self._post(api, event_id, "redeliver")

        assert response.headers["location"] == f"/ui/events/{event_id}?done=not-redeliverable"
        assert await api.store.get(event_id) == before

    @pytest.mark.parametrize("action", ["cancel", "redeliver"])
    async def test_a_read_only_key_is_refused_and_nothing_changes(
        self, api: Harness, action: str
    ) -> None:
        event_id = await api.submitted_id(ADMIN)
        before = await api.store.get(event_id)
        await sign_in(api.client, AUDITOR)

        response = await self._post(api, event_id, action)

        assert response.status_code == 403
        assert f"This key may not {action} events." in response.text
        assert await api.store.get(event_id) == before

    @pytest.mark.parametrize("action", ["cancel", "redeliver"])
    @pytest.mark.parametrize("well_formed", [True, False], ids=["unknown", "malformed"])
    async def test_an_event_that_is_not_there_is_a_404(
        self, api: Harness, action: str, well_formed: bool
    ) -> None:
        await sign_in(api.client, ADMIN)
        event_id = await api.submitted_id(ADMIN)
        page = await api.client.get(f"/ui/events/{event_id}")
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        target = make_event().id if well_formed else "not-an-id"

        response = await api.client.post(f"/ui/events/{target}/{action}", data={"csrf": token})

        assert response.status_code == 404
        assert "No such event." in response.text


def at_hours(hours: int) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S")


def field_time(moment: datetime) -> str:
    """As a browser's date-time field sends it (UTC, no offset)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def external_ids(page: httpx.Response) -> list[str]:
    """The external ids of a list page's rows, in their order."""
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0]
    cells = rows.split('data-label="External id"')[1:]
    return [cell.split("</a>")[0].rsplit(">", 1)[1] for cell in cells]


class TestScheduledRange:
    async def test_the_events_list_holds_only_events_scheduled_in_the_range_page_by_page(
        self, api: Harness
    ) -> None:
        start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
        end = start + timedelta(minutes=30)
        inside = [
            make_event(external_job_id=f"in-{n:02d}", scheduled_at=start + timedelta(minutes=n))
            for n in range(30)
        ]
        # Just before the start, and at the end: the range includes its start, not its end.
        outside = [
            make_event(external_job_id="before", scheduled_at=start - timedelta(seconds=1)),
            make_event(external_job_id="at-end", scheduled_at=end),
        ]
        await seed(api.store, *inside, *outside)
        await sign_in(api.client, ADMIN)
        # The start with an offset (read as that instant), the end as a date-time field sends it.
        typed_start = start.astimezone(timezone(timedelta(hours=2))).isoformat()

        first = await api.client.get(
            "/ui/events", params={"from": typed_start, "to": field_time(end), "limit": "25"}
        )
        further = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        second = await api.client.get(further.replace("&amp;", "&"))

        assert first.status_code == 200
        assert external_ids(first) == [f"in-{n:02d}" for n in range(25)]
        assert external_ids(second) == [f"in-{n:02d}" for n in range(25, 30)]
        # Written back in UTC into the form, and kept by the next page's link.
        assert f'name="from" type="datetime-local" step="1" value="{field_time(start)}"' in (
            first.text
        )
        assert f'name="to" type="datetime-local" step="1" value="{field_time(end)}"' in (
            second.text
        )
        assert 'rel="next"' not in second.text

    @pytest.mark.parametrize(
        ("params", "field", "reason", "listed"),
        [
            # The end is left out; the start still applies.
            (
                {"from": "2030-01-02T00:00", "to": "2030-01-01T00:00"},
                "to",
                "must not be before the start",
                ["later"],
            ),
            ({"from": "tomorrow"}, "from", "use a date and time such as", ["now", "later"]),
        ],
    )
    async def test_a_bad_bound_is_a_400_naming_its_field_and_is_left_out(
        self, api: Harness, params: dict[str, str], field: str, reason: str, listed: list[str]
    ) -> None:
        await seed(
            api.store,
            make_event(external_job_id="now"),
            make_event(external_job_id="later", scheduled_at=datetime(2030, 1, 3, tzinfo=UTC)),
        )
        await sign_in(api.client, ADMIN)

        page = await api.client.get("/ui/events", params=params)

        assert page.status_code == 400
        error = page.text.split(f'id="e-{field}">')[1].split("</span>")[0]
        assert reason in error
        assert f'aria-describedby="e-{field}"' in page.text
        assert external_ids(page) == listed

    async def test_bulk_redelivery_takes_only_the_dead_letters_scheduled_in_the_range(
        self, api: Harness
    ) -> None:
        start = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        letters = [
            make_event(
                external_job_id=f"dead-{n}",
                scheduled_at=start + timedelta(hours=n),
                status=EventStatus.DEAD_LETTER,
                attempts=3,
            )
            for n in range(-1, 4)
        ]
        await seed(api.store, *letters)
        await sign_in(api.client, ADMIN)
        chosen = {"from": field_time(start), "to": field_time(start + timedelta(hours=2))}

        listed = await api.client.get("/ui/dead-letters", params=chosen)
        confirm = await api.client.get("/ui/dead-letters/redeliver", params=chosen)
        form = confirm.text.split('action="/ui/dead-letters/redeliver"')[1].split("</form>")[0]
        hidden = {
            part.split('"')[0]: part.split('value="')[1].split('"')[0]
            for part in form.split('name="')[1:]
        }
        done = await api.client.post("/ui/dead-letters/redeliver", data=hidden)
        after = {
            letter.external_job_id: (await stored_status(api, letter.id)) for letter in letters
        }

        assert external_ids(listed) == ["dead-0", "dead-1"]
        # The bulk form on the list and the confirmation carry the range.
        assert f'name="from" value="{chosen["from"]}"' in listed.text.split('class="bulk"')[1]
        assert "This will redeliver <strong>2</strong> events" in confirm.text
        assert (hidden["from"], hidden["to"], hidden["count"]) == (
            chosen["from"],
            chosen["to"],
            "2",
        )
        assert done.status_code == 303
        assert dict(parse_qsl(done.headers["location"].split("?", 1)[1])) == {
            **chosen, "done": "bulk", "n": "2",
        }  # fmt: skip
        assert after == {
            "dead--1": EventStatus.DEAD_LETTER,
            "dead-0": EventStatus.PENDING,
            "dead-1": EventStatus.PENDING,
            "dead-2": EventStatus.DEAD_LETTER,
            "dead-3": EventStatus.DEAD_LETTER,
        }


async def stored_status(api: Harness, event_id: str) -> EventStatus:
    stored = await api.store.get(event_id)
    assert stored is not None
    return stored.status


Register = Callable[[DeliveryType], None]


class Ledger:
    """A delivery type's plugin passed in with a version of its own."""

    __version__ = "2.7.1"

    @hookimpl
    def register_delivery_types(self, register: Register) -> None:
        register(DeliveryType("ledger", lambda destination: None, self.deliver))

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome.success(200)


async def test_the_delivery_types_page_shows_each_types_version(tmp_path: Path) -> None:
    env = {
        "TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml")),
        "TIMEFUSE_UI_SECRET": SECRET,
        "TIMEFUSE_PLUGINS": "",
    }
    async with running_api(tmp_path, env=env, plugins=(Ledger(),)) as api:
        await sign_in(api.client, ADMIN)
        page = await api.client.get("/ui/delivery-types")

    rows = page.text.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    cells = {
        row.split("<code>")[1].split("</code>")[0]: [
            cell.split("</td>")[0] for cell in row.split("<td")[1:]
        ]
        for row in rows
    }
    assert page.status_code == 200
    assert '<th scope="col">Version</th>' in page.text
    assert cells["ledger"][:2] == [">2.7.1", f">{__name__}.Ledger (passed in)"]
    # A built-in type carries timefuse's own version.
    assert cells["http"][:2] == [
        f">{importlib.metadata.version('timefuse')}",
        f">{BUILTIN_ORIGIN}",
    ]


@pytest.mark.slow  # a wheel built in a subprocess: a second or two
def test_the_wheel_ships_the_consoles_templates_and_static_files(tmp_path: Path) -> None:
    # Built with this environment's setuptools (the dev extra pins one that needs no `wheel`
    # package), offline: no isolated build environment, no index.
    setuptools = importlib.metadata.version("setuptools")
    assert tuple(map(int, setuptools.split(".")[:2])) >= (70, 1), (
        "setuptools is older than the dev extra asks: run `make .venv/.installed`"
    )
    # Built from a copy of the sources, so that nothing a build left in the checkout (build/)
    # can stand in for a file the package data would miss.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "timefuse", source / "timefuse", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        env={**os.environ, "PIP_NO_INDEX": "1"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("timefuse-*.whl")
    ui = ROOT / "timefuse" / "entrypoints" / "ui"
    wanted = {
        path.relative_to(ROOT).as_posix(): path.read_bytes()
        for folder in ("templates", "static")
        for path in (ui / folder).iterdir()
        if path.is_file()
    }

    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in archive.namelist() if name in wanted}

    assert {"timefuse/entrypoints/ui/templates/base.html",
            "timefuse/entrypoints/ui/templates/events.html",
            "timefuse/entrypoints/ui/static/console.css",
            "timefuse/entrypoints/ui/static/console.js"} <= set(wanted)  # fmt: skip
    assert shipped == wanted
