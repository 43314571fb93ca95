"""The operator console in a real headless Chromium, against a real ``timefuse serve``.

Events are submitted over the REST API, then looked at and acted on through the console's
pages as an operator would: signing in with a key, filling in forms, clicking buttons. What
the pages show is checked against what was submitted, and what the buttons did against the
API. Screenshots of each page land in ``test-artifacts/console/``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from confluent_kafka import Producer
from playwright.async_api import Browser, Page, expect

from tests.support.browser import browser_fixture, screenshot, visitor  # noqa: F401 (fixture)
from tests.support.kafka_broker import KafkaBroker
from tests.support.process import TimefuseProcess, free_port
from tests.support.receiver import Receiver, always, fail_then
from timefuse.entrypoints.auth import hash_key

Start = Callable[..., TimefuseProcess]
EVENTS = "/api/v1/events"
KEYS = {
    "ops-admin": ("tfk_console_admin", '"*"', '["admin"]', False),
    "billing-team": ("tfk_console_billing", '["billing"]', '["submit", "read", "cancel"]', False),
    "auditor": ("tfk_console_auditor", '"*"', '["admin"]', True),
}


def key(name: str) -> str:
    return KEYS[name][0]


def write_keys(path: Path) -> Path:
    entries = []
    for name, (secret, sources, roles, read_only) in KEYS.items():
        entry = f'[[keys]]\nname = "{name}"\nsha256 = "{hash_key(secret)}"\n'
        entry += f"sources = {sources}\nroles = {roles}\n"
        entries.append(entry + ("read_only = true\n" if read_only else ""))
    path.write_text("\n".join(entries))
    return path


@dataclass
class Api:
    """The REST API of one process, called with a key."""

    tf: TimefuseProcess
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, who: str = "ops-admin", **kw: Any) -> Any:
        response = await self.answer(method, path, who, **kw)
        assert response.status_code < 300, response.text
        return response.json()["data"]

    async def answer(
        self, method: str, path: str, who: str = "ops-admin", **kw: Any
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {key(who)}"}
        return await self.http.request(method, self.tf.base_url + path, headers=headers, **kw)

    async def submit(self, external_id: str, source: str, destination: str, **extra: Any) -> str:
        when = extra.pop("at", datetime.now(UTC) + timedelta(hours=1))
        body = {
            "external_job_id": external_id,
            "source": source,
            "scheduled_at": when.isoformat(),
            "delivery_type": "http",
            "destination": destination,
            "payload": {"order": external_id, "lines": [{"sku": "A-1", "qty": 2}]},
            **extra,
        }
        return str((await self.call("POST", EVENTS, json=body))["id"])

    async def status(self, event_id: str) -> str:
        return str((await self.call("GET", f"{EVENTS}/{event_id}"))["status"])

    async def wait_status(self, event_id: str, status: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (found := await self.status(event_id)) != status:
            assert time.monotonic() < deadline, f"{event_id} is {found}, not {status}"
            await asyncio.sleep(0.1)


@pytest.fixture
def api(timefuse: Start, tmp_path: Path, client: httpx.AsyncClient) -> Api:
    tf = timefuse({"TIMEFUSE_API_KEYS_FILE": str(write_keys(tmp_path / "keys.toml"))})
    return Api(tf, client)


async def signed_in(browser: Browser, tf: TimefuseProcess, who: str, phone: bool = False) -> Page:
    """A new visitor who has signed in with ``who``'s key, on the overview."""
    page = await (await visitor(browser, phone=phone)).new_page()
    await page.goto(f"{tf.base_url}/ui/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API key").fill(key(who))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


async def listed_ids(page: Page) -> list[str]:
    """The external ids in the event list on ``page``, top to bottom."""
    return await page.locator("table.events tbody td[data-label='External id']").all_inner_texts()


async def test_filtering_the_list_by_status_and_source_shows_exactly_those_events(
    api: Api, browser: Browser
) -> None:
    receiver = "https://example.com/hook"
    for n in (1, 2, 3):
        await api.submit(f"bill-{n}", "billing", receiver)
        await api.submit(f"ship-{n}", "shipping", receiver)
    cancelled = await api.submit("bill-cancelled", "billing", receiver)
    await api.call("DELETE", f"{EVENTS}/{cancelled}")
    page = await signed_in(browser, api.tf, "ops-admin")

    await page.get_by_role("link", name="Events").click()
    await page.get_by_label("Status").select_option("PENDING")
    await page.get_by_label("Source").fill("billing")
    await page.get_by_role("button", name="Apply").click()

    await expect(page.locator("table.events tbody tr")).to_have_count(3)
    assert await listed_ids(page) == ["bill-1", "bill-2", "bill-3"]
    assert "status=PENDING" in page.url
    assert "source=billing" in page.url
    await screenshot(page, "events-filtered")
    # The URL is the filter: another visitor opening it sees the same rows.
    shared = await signed_in(browser, api.tf, "ops-admin")
    await shared.goto(page.url)
    assert await listed_ids(shared) == ["bill-1", "bill-2", "bill-3"]
    await shared.goto(f"{api.tf.base_url}/ui/events?status=CANCELLED")
    assert await listed_ids(shared) == ["bill-cancelled"]
    phone = await signed_in(browser, api.tf, "ops-admin", phone=True)
    await phone.goto(page.url)
    assert await listed_ids(phone) == ["bill-1", "bill-2", "bill-3"]
    await screenshot(phone, "events-filtered-phone")


async def test_filtering_by_receiver_and_paging_the_latest_first(
    api: Api, browser: Browser
) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    for n in range(30):  # every minute, alternating between two hosts
        host = "hooks.example" if n % 2 else "other.example"
        await api.submit(f"job-{n:02}", "billing", f"https://{host}/in/{n}",
                         at=start + timedelta(minutes=n))  # fmt: skip
    early = start - timedelta(seconds=30)
    await api.submit("on-8443", "billing", "https://hooks.example:8443/x", at=early)
    page = await signed_in(browser, api.tf, "ops-admin")
    await page.goto(f"{api.tf.base_url}/ui/events")

    # A host: any port of it, whatever case the URL was written in.
    await page.get_by_label("Destination").fill("HOOKS.example")
    await page.get_by_label("Delivery type").select_option("http")
    await page.get_by_role("button", name="Apply").click()
    odd = [f"job-{n:02}" for n in range(1, 30, 2)]
    assert await listed_ids(page) == ["on-8443", *odd]
    assert "destination=HOOKS.example" in page.url
    assert "type=http" in page.url

    # host:port, then the start of a URL.
    await page.get_by_label("Destination").fill("hooks.example:8443")
    await page.get_by_role("button", name="Apply").click()
    assert await listed_ids(page) == ["on-8443"]
    await page.get_by_label("Destination").fill("https://other.example/in/1")
    await page.get_by_role("button", name="Apply").click()
    assert await listed_ids(page) == ["job-10", "job-12", "job-14", "job-16", "job-18"]

    # The latest first, 25 a page: the order and the filters carry to the next page.
    await page.get_by_label("Destination").fill("")
    await page.get_by_label("Per page").select_option("25")
    await page.get_by_role("button", name="Apply").click()
    await page.get_by_role("link", name="Scheduled").click()
    assert "order=newest" in page.url
    everything = [*(f"job-{n:02}" for n in reversed(range(30))), "on-8443"]
    assert await listed_ids(page) == everything[:25]
    await expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "descending")
    await screenshot(page, "events-latest-first")
    await page.get_by_role("link", name="Next page").click()
    assert await listed_ids(page) == everything[25:]
    assert "order=newest" in page.url
    await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    # And back to the earliest first from the same header.
    await page.get_by_role("link", name="Scheduled").click()
    assert (await listed_ids(page))[:3] == ["on-8443", "job-00", "job-01"]


async def test_an_events_page_shows_its_fields_payload_and_attempts(
    api: Api, browser: Browser, receiver: Receiver
) -> None:
    receiver.behaviours["/flaky"] = fail_then(500, 2)
    event_id = await api.submit(
        "order-77", "billing", receiver.url("/flaky"), at=datetime.now(UTC), max_retries=3
    )
    await api.wait_status(event_id, "COMPLETED")
    page = await signed_in(browser, api.tf, "ops-admin")

    await page.goto(f"{api.tf.base_url}/ui/events?q=order-77")

    assert page.url.endswith(f"/ui/events/{event_id}")  # an exact match opens the event
    attempts = page.locator("ol.timeline > li")
    await expect(attempts).to_have_count(3)
    # Newest first: the success, then the two failures.
    assert [await a.locator(".badge").inner_text() for a in await attempts.all()] == [
        "SUCCESS",
        "RETRIABLE",
        "RETRIABLE",
    ]
    assert [await a.locator(".code").inner_text() for a in await attempts.all()] == [
        "HTTP 200",
        "HTTP 500",
        "HTTP 500",
    ]
    await expect(attempts.first).to_contain_text("worker")
    await expect(page.locator("dl.fields")).to_contain_text(event_id)
    await expect(page.locator("pre.payload").first).to_contain_text('"order": "order-77"')
    # Each time in UTC, and beside it the browser's zone (Europe/Berlin: UTC+1 or +2).
    await expect(page.locator("time + .local").first).to_contain_text(":")
    await screenshot(page, "event-detail")
    phone = await signed_in(browser, api.tf, "ops-admin", phone=True)
    await phone.goto(page.url)
    await screenshot(phone, "event-detail-phone")


async def test_cancelling_a_pending_event_from_its_page(api: Api, browser: Browser) -> None:
    event_id = await api.submit("to-cancel", "billing", "https://example.com/hook")
    page = await signed_in(browser, api.tf, "ops-admin")
    await page.goto(f"{api.tf.base_url}/ui/events/{event_id}")

    await page.get_by_role("button", name="Cancel this event").click()

    await expect(page.get_by_role("status")).to_contain_text("Event cancelled")
    assert await api.status(event_id) == "CANCELLED"
    # The action is recorded with the key's name, and the button is gone.
    await expect(page.locator("section", has_text="Done from this console")).to_contain_text(
        "cancel by ops-admin"
    )
    await expect(page.get_by_role("button", name="Cancel this event")).to_have_count(0)
    assert '"event": "console action"' in api.tf.log()
    assert '"key": "ops-admin"' in api.tf.log()


async def test_rescheduling_a_pending_event_an_hour_earlier_delivers_it_then(
    api: Api, browser: Browser, receiver: Receiver
) -> None:
    receiver.behaviours["/moved"] = always(204)
    # Not on a whole minute: Chromium shows a datetime-local value of :00 seconds without them.
    scheduled = (datetime.now(UTC) + timedelta(hours=1)).replace(second=30)
    event_id = await api.submit("moved-up", "billing", receiver.url("/moved"), at=scheduled)
    page = await signed_in(browser, api.tf, "ops-admin")
    await page.goto(f"{api.tf.base_url}/ui/events/{event_id}")
    field = page.get_by_label("Deliver at")
    await expect(field).to_have_value(scheduled.strftime("%Y-%m-%dT%H:%M:%S"))
    phone = await signed_in(browser, api.tf, "ops-admin", phone=True)
    await phone.goto(f"{api.tf.base_url}/ui/events/{event_id}")
    await expect(phone.get_by_label("Deliver at")).to_be_visible()
    await screenshot(phone, "event-pending-phone")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390

    await field.fill("2001-01-01T00:00:00")
    await page.get_by_role("button", name="Reschedule").click()
    await expect(page.get_by_role("alert")).to_contain_text("The new time is in the past")
    await screenshot(page, "event-reschedule-refused")
    await field.fill(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    await page.get_by_role("button", name="Reschedule").click()

    await expect(page.get_by_role("status")).to_contain_text("Event rescheduled")
    await api.wait_status(event_id, "COMPLETED")
    assert [r.event_id for r in receiver.received] == [event_id]
    # Delivered at the new time; the time it was submitted for stays on the event.
    delivered = await api.call("GET", f"{EVENTS}/{event_id}")
    assert delivered["scheduled_at"].startswith(scheduled.strftime("%Y-%m-%dT%H:%M:%S"))
    await page.reload()
    await expect(page.locator("section", has_text="Done from this console")).to_contain_text(
        "reschedule to "
    )
    await screenshot(page, "event-rescheduled")


async def test_bulk_redelivery_of_dead_letters_after_a_confirmation_with_the_count(
    api: Api, browser: Browser, receiver: Receiver
) -> None:
    receiver.behaviours["/down"] = always(503)
    now = datetime.now(UTC)
    billing = [
        await api.submit(f"dead-{n}", "billing", receiver.url("/down"), at=now, max_retries=0)
        for n in (1, 2, 3)
    ]
    other = await api.submit("dead-ship", "shipping", receiver.url("/down"), at=now, max_retries=0)
    for event_id in [*billing, other]:
        await api.wait_status(event_id, "DEAD_LETTER")
    receiver.behaviours["/down"] = always(200)
    page = await signed_in(browser, api.tf, "ops-admin")

    await page.get_by_role("link", name="Dead letters").click()
    await page.get_by_label("Source").fill("billing")
    await page.get_by_role("button", name="Apply").click()
    assert sorted(await listed_ids(page)) == ["dead-1", "dead-2", "dead-3"]
    await screenshot(page, "dead-letters")
    await page.get_by_role("button", name="Redeliver the dead letters matching").click()
    await expect(page.locator(".confirm-count")).to_contain_text("This will redeliver 3 events")
    await screenshot(page, "dead-letters-confirm")
    await page.get_by_role("button", name="Redeliver 3 events").click()

    await expect(page.get_by_role("status")).to_contain_text("(3 events)")
    for event_id in billing:
        await api.wait_status(event_id, "COMPLETED")
    arrivals = [r.event_id for r in receiver.on("/down")]
    # Each billing event twice: its failed attempt, then its redelivery; the other once.
    assert {event_id: arrivals.count(event_id) for event_id in [*billing, other]} == {
        **dict.fromkeys(billing, 2),
        other: 1,
    }
    assert await api.status(other) == "DEAD_LETTER"  # another source: not in the filter


async def test_a_source_scoped_key_sees_only_its_sources_on_every_page(
    api: Api, browser: Browser
) -> None:
    ours = await api.submit("bill-1", "billing", "https://example.com/a")
    theirs = await api.submit("ship-secret", "shipping", "https://example.com/b")
    page = await signed_in(browser, api.tf, "billing-team")
    base = f"{api.tf.base_url}/ui"

    await expect(page.locator(".count.total .n")).to_have_text("1")
    await expect(page.get_by_role("link", name="Destinations")).to_have_count(0)
    await screenshot(page, "overview-source-scoped")
    await page.goto(f"{base}/events")
    assert await listed_ids(page) == ["bill-1"]
    for url, expected in {
        f"{base}/events?source=shipping": [],
        f"{base}/events?q=ship-secret": [],
        f"{base}/events?destination=https://example.com/b": [],
        f"{base}/events?destination=example.com&type=http&order=newest": ["bill-1"],
        f"{base}/dead-letters?source=shipping": [],
    }.items():
        await page.goto(url)
        assert await listed_ids(page) == expected, url
        await expect(page.locator("table.events")).not_to_contain_text("example.com/b")
    for admin_only in ("/dead-letters/refused", "/dead-letters/redeliver?source=shipping"):
        response = await page.goto(base + admin_only)
        assert response is not None
        assert response.status == 403, admin_only
    response = await page.goto(f"{base}/events/{theirs}")
    assert response is not None
    assert response.status == 404
    await expect(page.locator("main")).not_to_contain_text("ship-secret")
    response = await page.goto(f"{base}/destinations")
    assert response is not None
    assert response.status == 403
    response = await page.goto(f"{base}/events/{ours}")
    assert response is not None
    assert response.status == 200


async def test_a_read_only_key_sees_no_action_and_is_refused_when_it_acts_anyway(
    api: Api, browser: Browser
) -> None:
    event_id = await api.submit("keep-me", "billing", "https://example.com/hook")
    page = await signed_in(browser, api.tf, "auditor")
    await page.goto(f"{api.tf.base_url}/ui/events/{event_id}")
    await expect(page.get_by_role("heading", name="keep-me")).to_be_visible()

    await expect(page.get_by_role("button", name="Cancel this event")).to_have_count(0)
    await expect(page.locator("form[action$='/cancel']")).to_have_count(0)
    await expect(page.get_by_role("note")).to_contain_text("read-only")
    await screenshot(page, "event-read-only")
    # The page's own CSRF token, posted by hand: still refused, the event untouched.
    status = await page.evaluate(
        """async (id) => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const response = await fetch(`/ui/events/${id}/cancel`, {
                method: "POST", body: new URLSearchParams({csrf: token}),
            });
            return response.status;
        }""",
        event_id,
    )
    assert status == 403
    assert await api.status(event_id) == "PENDING"
    refused = await api.http.delete(
        f"{api.tf.base_url}{EVENTS}/{event_id}",
        headers={"authorization": f"Bearer {key('auditor')}"},
    )
    assert refused.status_code == 403
    assert await api.status(event_id) == "PENDING"


@pytest.mark.kafka
async def test_ingest_records_the_kafka_consumer_refused_are_listed_with_their_errors(
    timefuse: Start, tmp_path: Path, client: httpx.AsyncClient, browser: Browser, kafka: KafkaBroker
) -> None:
    run = uuid.uuid4().hex[:8]
    ingest = f"console-{run}.ingest"
    tf = timefuse(
        {
            "TIMEFUSE_API_KEYS_FILE": str(write_keys(tmp_path / "keys.toml")),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TIMEFUSE_KAFKA_INGEST_TOPIC": ingest,
            "TIMEFUSE_KAFKA_CONSUMER_GROUP": f"console-{run}",
            "KAFKA_PARTITIONS": "2",
        }
    )
    api = Api(tf, client)
    before = await api.submit("good-before", "billing", "https://example.com/hook")
    # What a faulty producer of the ingest topic might write: not timefuse's envelopes.
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(ingest, b"\xffnot an envelope", b"billing")
    producer.produce(ingest, b'{"id": 42, "source": []}', b"shipping")
    assert producer.flush(10) == 0
    after = await api.submit("good-after", "billing", "https://example.com/hook")
    refused = f"{EVENTS}/admin/ingest/dead-letters"
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while len(rows) < 2:
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.5)
        answer = await api.answer("GET", refused)
        # 503 while the broker has no leader yet for the dead-letter topic the consumer just
        # made (NOT_LEADER_FOR_PARTITION): the answer says so, and the next look reads it.
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 200:
            rows = answer.json()["data"]

    by_key = {row["key"]: row for row in rows}
    assert set(by_key) == {"billing", "shipping"}
    assert "not a timefuse event envelope" in by_key["billing"]["error"]
    assert by_key["shipping"]["error"]  # the consumer's reason, whatever its words
    assert by_key["shipping"]["value"] == '{"id": 42, "source": []}'
    assert all(row["origin"].startswith(f"{ingest}/") for row in rows)
    assert [await api.status(before), await api.status(after)] == ["PENDING", "PENDING"]
    page = await signed_in(browser, tf, "ops-admin")
    await page.get_by_role("link", name="Dead letters").click()
    await page.get_by_role("link", name="refused at ingest").click()
    cards = page.locator("ol.refused > li")
    await expect(cards).to_have_count(2)
    # Newest first, as the API lists them, each with its reason.
    for card, row in zip(await cards.all(), rows, strict=True):
        await expect(card).to_contain_text(row["error"])
        await expect(card).to_contain_text(row["origin"])
    await screenshot(page, "refused-at-ingest")
    phone = await signed_in(browser, tf, "ops-admin", phone=True)
    await phone.goto(page.url)
    await phone.locator("ol.refused > li").first.locator("summary").click()
    await screenshot(phone, "refused-at-ingest-phone")


@pytest.fixture
async def other_site() -> AsyncIterator[Callable[[str], str]]:
    """Serves pages at http://localhost:<port>: another site than 127.0.0.1's."""
    pages: dict[str, str] = {}

    async def handle(request: web.Request) -> web.Response:
        if request.path not in pages:
            return web.Response(status=404)
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    def publish(html: str) -> str:
        path = f"/page{len(pages)}"
        pages[path] = html
        return f"http://localhost:{port}{path}"

    yield publish
    await runner.cleanup()


async def test_a_post_without_the_csrf_token_is_refused(
    api: Api, browser: Browser, other_site: Callable[[str], str]
) -> None:
    event_id = await api.submit("target", "billing", "https://example.com/hook")
    page = await signed_in(browser, api.tf, "ops-admin")
    cancel = f"{api.tf.base_url}/ui/events/{event_id}/cancel"

    # From the console's own origin, with its session cookie, but no token.
    no_token = await page.evaluate(
        """async (url) => (await fetch(url, {
            method: "POST", body: new URLSearchParams({csrf: "guessed"}),
        })).status""",
        cancel,
    )
    # From another site: a page that posts a form to the console as soon as it loads.
    attack = other_site(
        f'<form method="post" action="{cancel}"><input name="csrf" value="guessed"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    async with page.expect_navigation(url=cancel) as navigation:
        await page.goto(attack)
    response = await navigation.value

    assert no_token == 403
    assert response is not None
    assert response.status == 403
    assert await api.status(event_id) == "PENDING"


async def test_a_shared_link_followed_from_another_site_keeps_the_session(
    api: Api, browser: Browser, other_site: Callable[[str], str]
) -> None:
    await api.submit("linked", "billing", "https://example.com/hook")
    page = await signed_in(browser, api.tf, "ops-admin")
    shared = f"{api.tf.base_url}/ui/events?source=billing"
    # A chat or a ticket: another site's page with a link to a filtered list.
    await page.goto(other_site(f'<a href="{shared}">the failing billing events</a>'))

    await page.get_by_role("link", name="the failing billing events").click()

    await expect(page.get_by_role("heading", name="Events")).to_be_visible()
    assert await listed_ids(page) == ["linked"]
    await page.goto(f"{api.tf.base_url}/ui/")  # still signed in afterwards
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def test_screenshots_of_the_remaining_pages(
    api: Api, browser: Browser, receiver: Receiver
) -> None:
    receiver.behaviours["/ok"] = always(200)
    receiver.behaviours["/broken"] = always(503)
    now = datetime.now(UTC)
    for n in range(6):
        await api.submit(f"inv-{n}", "billing", receiver.url("/ok"), at=now)
    broken = await api.submit("bad-1", "shipping", receiver.url("/broken"), at=now, max_retries=0)
    await api.wait_status(broken, "DEAD_LETTER")
    await api.submit("later-1", "billing", receiver.url("/ok"))
    page = await signed_in(browser, api.tf, "ops-admin")

    await page.reload()
    await expect(page.locator(".count.status-dead_letter .n")).to_have_text("1")
    await expect(page.locator("svg.chart")).to_have_count(4)  # three per minute, and lateness
    # The lateness chart has drawn this minute's deliveries (a dot: one busy minute).
    await expect(page.locator("svg.line-chart .line.p50 circle")).to_have_count(1)
    # This `timefuse serve` is the one process: every role, the dispatcher among them.
    workers = page.locator("table.workers tbody tr")
    await expect(workers).to_have_count(1)
    await expect(workers.locator(".role.dispatch")).to_have_text("dispatch")
    await screenshot(page, "overview")
    await page.get_by_text("The same figures as a table").click()
    await expect(page.locator("details.figures tbody tr").first).to_be_visible()
    await page.get_by_role("link", name="Destinations").click()
    await expect(page.locator("tbody tr")).to_have_count(1)  # one host: the receiver
    await expect(page.locator("tbody")).to_contain_text(f"127.0.0.1:{receiver.port}")
    await screenshot(page, "destinations")
    await page.get_by_role("link", name="Delivery types").click()
    http_row = page.locator("tbody tr").filter(has=page.locator("code", has_text="http"))
    # Type, version (a built-in carries timefuse's own), origin.
    await expect(http_row.locator("td").first).to_have_text(importlib.metadata.version("timefuse"))
    await screenshot(page, "delivery-types")
    login = await (await visitor(browser)).new_page()
    await login.goto(f"{api.tf.base_url}/ui/events")
    await login.get_by_label("API key").fill("tfk_not_a_key")
    await login.get_by_role("button", name="Sign in").click()
    await expect(login.get_by_role("alert")).to_contain_text("not valid")
    await screenshot(login, "sign-in-refused")
    phone = await signed_in(browser, api.tf, "ops-admin", phone=True)
    await screenshot(phone, "overview-phone")
    for path, name in (("/dead-letters", "dead-letters"), ("/destinations", "destinations"),
                       ("/delivery-types", "delivery-types")):  # fmt: skip
        await phone.goto(f"{api.tf.base_url}/ui{path}")
        await expect(phone.locator("main h1")).to_be_visible()
        await screenshot(phone, f"{name}-phone")
        # Nothing wider than the phone: no sideways scrolling of the page itself.
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 390, path


UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea, button")]
    .filter((el) => el.type !== "hidden")
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                    && !(el.tagName === "BUTTON" && el.textContent.trim()))
    .map((el) => el.outerHTML)"""


async def test_every_control_has_a_label_and_the_keyboard_reaches_the_actions(
    api: Api, browser: Browser
) -> None:
    event_id = await api.submit("by-keyboard", "billing", "https://example.com/hook")
    schedule = await api.call("POST", "/api/v1/schedules", json={
        "key": "hourly", "source": "billing", "every_seconds": 3600,
        "event": {"delivery_type": "http", "destination": "https://example.com/hook",
                  "payload": {}}})  # fmt: skip
    page = await signed_in(browser, api.tf, "ops-admin")
    base = f"{api.tf.base_url}/ui"
    pages = ("/", "/events", "/dead-letters", "/dead-letters/refused", "/destinations",
             "/delivery-types", "/dead-letters/redeliver", "/schedules",
             f"/schedules/{schedule['id']}")  # fmt: skip
    for path in pages:
        await page.goto(base + path)
        assert await page.evaluate(UNLABELLED) == [], path
    await page.goto(f"{base}/events/{event_id}")
    assert await page.evaluate(UNLABELLED) == []

    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    for _ in range(5):  # from the top of the content, a few tabs reach the first action
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Cancel this event":
            break
    await page.keyboard.press("Enter")

    await expect(page.get_by_role("status")).to_contain_text("Event cancelled")
    assert await api.status(event_id) == "CANCELLED"


async def test_without_keys_the_console_is_open_and_says_so(
    timefuse: Start, browser: Browser
) -> None:
    tf = timefuse()
    page = await (await visitor(browser)).new_page()

    await page.goto(f"{tf.base_url}/ui")

    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.get_by_role("note")).to_contain_text("Open console")
    await screenshot(page, "overview-open-console")


async def test_timefuse_ui_off_serves_no_console(
    timefuse: Start, client: httpx.AsyncClient
) -> None:
    tf = timefuse({"TIMEFUSE_UI": "off"})

    response = await client.get(f"{tf.base_url}/ui/")

    assert response.status_code == 404
    assert (await client.get(f"{tf.base_url}/health")).status_code == 200


async def test_closing_an_open_circuit_breaker_from_the_destinations_page(
    timefuse: Start, tmp_path: Path, client: httpx.AsyncClient, browser: Browser, receiver: Receiver
) -> None:
    tf = timefuse(
        {
            "TIMEFUSE_API_KEYS_FILE": str(write_keys(tmp_path / "keys.toml")),
            "TIMEFUSE_BREAKER_FAILURES": "1",
            "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": "600",
        }
    )
    api = Api(tf, client)
    receiver.behaviours["/down"] = always(503)
    failed = await api.submit("trips", "billing", receiver.url("/down"), at=datetime.now(UTC))
    await api.wait_status(failed, "PENDING")  # its retry waits: the breaker is open
    page = await signed_in(browser, tf, "ops-admin")
    await page.goto(f"{tf.base_url}/ui/destinations")
    row = page.locator("tbody tr", has_text=f"127.0.0.1:{receiver.port}")
    await expect(row.locator(".badge")).to_have_text("OPEN")
    await screenshot(page, "destinations-breaker-open")

    receiver.behaviours["/down"] = always(200)  # the receiver is back
    await row.get_by_role("button", name="Close breaker").click()

    await expect(page.get_by_role("status")).to_contain_text("Circuit breaker closed")
    # What the open breaker held back goes at once, not at the end of the 600 s cool-down.
    await api.wait_status(failed, "COMPLETED")
    states = await api.call("GET", f"{EVENTS}/admin/destinations")
    assert [state["breaker"] for state in states] == ["CLOSED"]
    await page.reload()
    await expect(row.locator(".badge")).to_have_text("CLOSED")


async def test_the_overview_names_the_oldest_overdue_event(
    timefuse: Start, tmp_path: Path, client: httpx.AsyncClient, browser: Browser
) -> None:
    # The API alone: nothing dispatches, so what falls due stays pending.
    keys = str(write_keys(tmp_path / "keys.toml"))
    tf = timefuse({"TIMEFUSE_API_KEYS_FILE": keys}, command="api")
    api = Api(tf, client)
    now = datetime.now(UTC)
    await api.submit("late-2", "billing", "https://example.com/hook", at=now)
    await api.submit("late-1", "billing", "https://example.com/hook", at=now - timedelta(seconds=4))
    await api.submit("not-yet", "billing", "https://example.com/hook")
    page = await signed_in(browser, tf, "ops-admin")
    overdue = page.locator("section", has_text="Oldest overdue event")

    deadline = time.monotonic() + 20
    while "late-1" not in await overdue.inner_text():
        assert time.monotonic() < deadline, await overdue.inner_text()
        await asyncio.sleep(0.5)
        await page.reload()

    await expect(overdue).to_contain_text("still pending")
    await expect(overdue).not_to_contain_text("late-2")
    # And the overview says why: the one process seen doesn't dispatch.
    processes = page.locator("section", has_text="Processes seen recently")
    await expect(processes).to_contain_text("No live process dispatches")
    await screenshot(page, "overview-overdue")


async def test_schedules_listed_paused_resumed_and_triggered_from_the_console(
    api: Api, browser: Browser, receiver: Receiver
) -> None:
    receiver.behaviours["/nightly"] = always(204)
    template = {"delivery_type": "http", "destination": receiver.url("/nightly"),
                "payload": {"job": "invoices"}}  # fmt: skip
    nightly = await api.call("POST", "/api/v1/schedules", json={
        "key": "nightly-invoices", "source": "billing", "cron": "0 2 * * *",
        "timezone": "Europe/Berlin", "event": template})  # fmt: skip
    stock = await api.call("POST", "/api/v1/schedules", json={
        "key": "stock-sync", "source": "shipping", "every_seconds": 900,
        "event": template})  # fmt: skip
    page = await signed_in(browser, api.tf, "ops-admin")

    await page.get_by_role("link", name="Schedules").click()
    keys = page.locator("table.schedules tbody td[data-label='Key']")
    await expect(keys).to_have_text(["nightly-invoices", "stock-sync"])
    await expect(page.locator("table.schedules tbody")).to_contain_text("0 2 * * *")
    await screenshot(page, "schedules")
    await page.get_by_role("link", name="nightly-invoices").click()
    await expect(page.get_by_role("heading", name="nightly-invoices")).to_be_visible()
    await expect(page.locator("ol.next-runs li")).to_have_count(5)
    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status")).to_contain_text("Schedule paused")
    paused = await api.call("GET", f"/api/v1/schedules/{nightly['id']}")
    assert paused["state"] == "PAUSED"
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status")).to_contain_text("Schedule resumed")
    await page.get_by_role("button", name="Trigger now").click()
    await expect(page.get_by_role("status")).to_contain_text("Occurrence created")
    occurrence = page.locator("table.occurrences tbody td[data-label='External id'] a")
    await expect(occurrence).to_have_count(1)
    # The occurrence is an event like any other: delivered to the receiver, due now.
    event_id = (await occurrence.get_attribute("href") or "").rsplit("/", 1)[-1]
    await api.wait_status(event_id, "COMPLETED")
    assert [r.path for r in receiver.received] == ["/nightly"]
    assert (await api.call("GET", f"/api/v1/schedules/{nightly['id']}"))["state"] == "ACTIVE"
    await page.reload()
    await expect(page.locator("table.occurrences tbody")).to_contain_text("COMPLETED")
    await screenshot(page, "schedule-detail")

    phone = await signed_in(browser, api.tf, "ops-admin", phone=True)
    for path, name in (("/schedules", "schedules"),
                       (f"/schedules/{nightly['id']}", "schedule-detail")):  # fmt: skip
        await phone.goto(f"{api.tf.base_url}/ui{path}")
        await expect(phone.locator("main h1")).to_be_visible()
        await screenshot(phone, f"{name}-phone")
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 390, path
    # A key for billing only sees billing's schedule, and not the other by its address.
    scoped = await signed_in(browser, api.tf, "billing-team")
    await scoped.goto(f"{api.tf.base_url}/ui/schedules")
    await expect(scoped.locator("table.schedules tbody td[data-label='Key']")).to_have_text(
        ["nightly-invoices"]
    )
    answer = await scoped.goto(f"{api.tf.base_url}/ui/schedules/{stock['id']}")
    assert answer is not None
    assert answer.status == 404
