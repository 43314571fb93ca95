"""The delivery type contract suite, run against timefuse's built-in types.

Plugin packages run the same suite (``examples/timefuse-file/tests``); a new built-in type
adds a class here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.receiver import Receiver, always
from timefuse.plugins.http import HttpPlugin
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.delivery_contract import (
    DeliveryTypeContract,
    ReadBack,
    collect_delivery_types,
)


class TestHttpType(DeliveryTypeContract):
    @pytest.fixture
    def env(self) -> dict[str, str]:
        # The receiver listens on loopback, which the SSRF guard refuses unless allowed.
        return {"TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8"}

    @pytest.fixture
    async def receiver(self) -> AsyncIterator[Receiver]:
        receiver = Receiver()
        await receiver.start()
        yield receiver
        await receiver.stop()

    @pytest.fixture
    def delivery_type(self, env: dict[str, str]) -> DeliveryType:
        return collect_delivery_types(HttpPlugin(), env)["http"]

    @pytest.fixture
    def valid_destination(self, receiver: Receiver) -> str:
        return receiver.url("/hooks/ok")

    @pytest.fixture
    def invalid_destinations(self) -> list[str]:
        return [
            "",
            "receiver.example/hooks",
            "ftp://receiver.example/hooks",
            "http://",
            "http://receiver.example:0/hooks",
            "http://receiver example/hooks",
        ]

    @pytest.fixture
    def arrange_failure(self, receiver: Receiver) -> str:
        receiver.behaviours["/hooks/down"] = always(503)
        return receiver.url("/hooks/down")

    @pytest.fixture
    def delivered_event_ids(self, receiver: Receiver) -> ReadBack:
        async def read() -> list[str]:
            return [request.event_id for request in receiver.on("/hooks/ok")]

        return read
