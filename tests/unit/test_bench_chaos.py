"""``timefuse bench chaos`` bookkeeping: what a window's acknowledged events became, and the
receiver that counts the requests it holds at once."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import aiohttp
import pytest

from timefuse.bench.chaos import Campaign, Load, Sent, Window, build_parser, main, render
from timefuse.bench.processes import ReceiverProcess


def campaign(tmp_path: Path, *windows: Window) -> Campaign:
    options = build_parser().parse_args([])
    chaos = Campaign(options, tmp_path, random.Random(1))
    chaos.windows.extend(windows)
    return chaos


def test_each_window_counts_its_own_events_missing_duplicates_and_lateness(
    tmp_path: Path,
) -> None:
    chaos = campaign(
        tmp_path,
        Window(0, "none", begun_wall=100.0, ended_wall=110.0),
        Window(1, "kill-api", begun_wall=110.0, ended_wall=120.0, struck_wall=112.0, down_s=1.0),
    )
    load = Load("http://127.0.0.1:1", ["http://127.0.0.1:2/hook"], rate=10, lead=1.0)
    load.acknowledged = {
        "a": Sent(0, 100.0),
        "b": Sent(0, 101.0),
        "c": Sent(1, 111.0),
        "d": Sent(1, 112.5),
        "e": Sent(1, 119.0),
    }
    load.offered.update({0: 3, 1: 5})
    load.refused.update({1: 4})
    chaos.arrivals.update({
        "a": [100.5, 103.0],
        "b": [101.2],
        "d": [118.0],  # stranded by the fault: waited 5.5 s after its time
        "e": [129.0],  # due well after the fault: not the fault's doing
        "stranger": [105.0],
    })  # fmt: skip
    chaos.limited_arrivals = [104.5, 110.1, 110.2, 110.3, 111.5]

    chaos._account(load)
    first, second = chaos.windows

    assert (first.acknowledged, first.delivered, first.missing, first.duplicates) == (2, 2, 0, 1)
    assert first.lateness_p50_s == pytest.approx(0.2)
    assert first.lateness_max_s == pytest.approx(0.5)
    assert first.limited_peak_per_s == 1  # second 110 began after the window ended
    assert (second.offered, second.refused, second.acknowledged) == (5, 4, 3)
    assert (second.delivered, second.missing) == (2, 1)
    assert second.lateness_max_s == pytest.approx(10.0)
    assert second.recovery_s == pytest.approx(5.5)
    assert math.isnan(first.recovery_s)
    assert second.limited_peak_per_s == 3  # the last window runs on into the drain


def test_the_report_sums_the_windows_and_keeps_the_worst_peaks() -> None:
    windows = [
        Window(
            0,
            "none",
            offered=10,
            acknowledged=10,
            delivered=10,
            capped_peak=7,
            limited_peak=9,
            limited_peak_per_s=160,
        ),
        Window(
            1,
            "kill-dispatch",
            offered=20,
            acknowledged=18,
            refused=2,
            delivered=17,
            missing=1,
            duplicates=3,
            capped_peak=20,
            limited_peak=4,
            limited_peak_per_s=120,
            lateness_max_s=6.5,
        ),
    ]

    lines = render(windows).splitlines()

    assert lines[0].split()[:3] == ["#", "fault", "at"]
    assert lines[0].split()[-6:] == ["cap", "peak", "rate", "peak", "rate", "peak/s"]
    assert lines[2].split()[1] == "kill-dispatch"
    assert lines[2].split()[-3:] == ["20", "4", "120"]
    total = lines[-1].split()
    assert total[:9] == ["total", "-", "0", "30", "28", "2", "27", "1", "3"]
    assert total[-3:] == ["20", "9", "160"]


class HeldAtOnce:
    """A receiver's ``peak``: the most requests held at once since the last look."""

    def __init__(self, *peaks: int) -> None:
        self._peaks = list(peaks)

    async def peak(self) -> int:
        return self._peaks.pop(0)


async def test_each_window_keeps_the_most_each_receiver_held_at_once(tmp_path: Path) -> None:
    chaos = campaign(tmp_path)
    chaos.options.faults, chaos.options.interval = 0, 0.01
    capped, limited = HeldAtOnce(20, 3), HeldAtOnce(12, 17)
    load = Load("http://127.0.0.1:1", ["http://127.0.0.1:2/hook"], rate=10, lead=1.0)

    await chaos._faults(load, capped, limited)  # type: ignore[arg-type]
    (window,) = chaos.windows
    assert (window.capped_peak, window.limited_peak) == (20, 12)

    # The drain looks again for the last window: a higher peak there counts, a lower one not.
    await chaos._peaks(window, capped, limited)  # type: ignore[arg-type]
    assert (window.capped_peak, window.limited_peak) == (20, 17)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "must be at least 1"),
        (["--faults", "-1"], "must not be negative"),
        (["--interval", "soon"], "must be a number"),
        (["--kinds", "kill-kafka"], "unknown fault 'kill-kafka'"),
    ],
)
def test_bad_options_are_refused_with_a_reason(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)

    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database-url", "mysql://x"], "must be a postgresql:// URL"),
        (["--kinds", "stop-broker,kill-ingest"], "Kafka faults need --kafka"),
        (
            ["--database-url", "postgresql://x/y", "--kinds", "restart-db-fast"],
            "database faults need the private PostgreSQL",
        ),
    ],
)
def test_a_database_it_cannot_use_is_refused_before_anything_starts(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


async def test_a_delaying_receiver_counts_the_requests_it_holds_at_once() -> None:
    receiver = ReceiverProcess(delay=0.3)
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def post(n: int) -> int:
                headers = {"webhook-id": f"evt-{n}"}
                async with session.post(receiver.url(), data=b"{}", headers=headers) as answer:
                    return answer.status

            statuses = await asyncio.gather(*(post(n) for n in range(5)))
            assert statuses == [204] * 5
            assert await receiver.peak() == 5
            assert await post(5) == 204
        assert await receiver.peak() == 1
        assert sorted(i for i, _ in await receiver.take()) == [f"evt-{n}" for n in range(6)]
    finally:
        await receiver.close()
