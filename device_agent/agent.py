"""The long-running agent: per enrolled PHD, connect, read, seal, spool; hand off to the gateway.

One task per credential runs sessions against its PHD (reconnecting with backoff), one task
delivers the spool to the gateway. A session::

    open link (connect + pair + policy)  ->  read DIS  ->  read Current Time (clock offset)
    ->  subscribe to measurements  ->  RACP download (glucose: all records the first time,
    ">= cursor" afterwards)  ->  collect until idle  ->  set the PHD clock via CTS if wrong
    ->  disconnect

Readings are enqueued by the BLE callbacks; a collector seals them in batches. Durability
order (see :mod:`device_agent.sealer`): seq persisted -> envelope spooled (fsync) -> RACP
cursor advanced. A crash anywhere loses nothing that was confirmed to the device's store: the
next session downloads again from the cursor, and the server's content ids and (device, seq)
idempotency absorb the repeats. Logs carry device ids, counts and reasons only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_agent.backoff import backoff_delay
from device_agent.ble import (
    CURRENT_TIME,
    BleBackends,
    PhdLink,
    Reading,
    SecurityPolicy,
)
from device_agent.errors import AgentError, BleError, BleFailure, PolicyError
from device_agent.handoff import DeliveryReport, Handoff
from device_agent.sealer import CLOCK_TOLERANCE, Sealer
from device_agent.spool import Spool
from device_agent.store import AgentHome, Credential, PhdInfo
from phd_protocol.errors import ParseError
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.gatt.racp import (
    RacpFilterType,
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    decode_racp,
)

__all__ = ["Agent", "AgentConfig", "SessionReport"]

logger = logging.getLogger(__name__)

_GLUCOSE_MEASUREMENT = 0x2A18
_RACP_DONE = frozenset({RacpResponseCode.SUCCESS, RacpResponseCode.NO_RECORDS_FOUND})


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    home: Path
    gateway_socket: Path | None = None
    policy: SecurityPolicy = field(default_factory=SecurityPolicy)
    poll_interval: float = 30.0  # seconds between sessions with one PHD
    session_idle: float = 1.0  # end a session after this long without a reading
    session_max: float = 120.0
    batch_max: int = 64  # readings per envelope (bounded well under 64 KiB)
    racp_timeout: float = 120.0
    handoff_interval: float = 5.0
    set_device_clock: bool = True


@dataclass(slots=True)
class SessionReport:
    device_id: str
    readings: int = 0
    envelopes: int = 0
    undecodable: int = 0
    stored_records: int = 0
    clock_offset: timedelta | None = None
    clock_corrected: bool = False
    clock_set: bool = False
    pairing: str = ""
    error: str | None = None


def device_clock(raw: bytes) -> datetime | None:
    """The PHD's wall clock from a Current Time value (CTS 3.1: Exact Time 256 starts with a
    Date Time), as naive local time; None when the device says it does not know the date."""
    if len(raw) < 7:
        return None
    try:
        return DateTime.decode(raw[:7]).to_datetime()
    except ParseError:
        return None


def current_time_value(moment: datetime) -> bytes:
    """A Current Time value to write (CTS 3.1): Date Time, day of week, 1/256 s, reason.

    Adjust Reason bit 0 = manual time update (the agent acts for the user here).
    """
    stamp = DateTime(
        year=moment.year,
        month=moment.month,
        day=moment.day,
        hours=moment.hour,
        minutes=moment.minute,
        seconds=moment.second,
    )
    fractions = moment.microsecond * 256 // 1_000_000
    return stamp.encode() + bytes([moment.isoweekday(), fractions, 0x01])


def _glucose_sequence(reading: Reading) -> int | None:
    # GLS 3.106: Flags (1 octet) then Sequence Number (uint16); present in every record.
    if reading.uuid != _GLUCOSE_MEASUREMENT or len(reading.data) < 3:
        return None
    return int.from_bytes(reading.data[1:3], "little")


class _Collector:
    """Batches readings of one session into sealed, spooled envelopes."""

    def __init__(self, agent: Agent, credential: Credential, sealer: Sealer, report: SessionReport):
        self.agent = agent
        self.credential = credential
        self.sealer = sealer
        self.report = report
        self.queue: asyncio.Queue[Reading] = asyncio.Queue()
        self.pending: list[Reading] = []
        self.phd: dict[str, str] = {}
        self.clock_offset: timedelta | None = None
        self.last_arrival = asyncio.get_running_loop().time()

    def put(self, reading: Reading) -> None:
        """BLE callback: enqueue only."""
        self.queue.put_nowait(reading)

    async def drain(self) -> None:
        while not self.queue.empty():
            self.pending.append(self.queue.get_nowait())
            self.report.readings += 1
            self.last_arrival = asyncio.get_running_loop().time()
            if len(self.pending) >= self.agent.config.batch_max:
                await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        sealed = await asyncio.to_thread(
            self.sealer.seal, batch, clock_offset=self.clock_offset, phd=self.phd
        )
        await asyncio.to_thread(
            self.agent.spool.put, self.credential.device_id, sealed.seq, sealed.envelope
        )
        self.report.envelopes += 1
        self.report.undecodable += sealed.undecodable
        sequences = [s for s in map(_glucose_sequence, batch) if s is not None]
        if sequences:
            self.report.stored_records += len(sequences)
            # Only now, with the records durably spooled, does the cursor move past them.
            await asyncio.to_thread(self.credential.set_racp_next, max(sequences) + 1)
        self.agent.wake_handoff()


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        backends: BleBackends,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.backends = backends
        self.now = now
        self.home = AgentHome(config.home)
        self.spool = Spool(self.home.spool_dir)
        self.handoff = Handoff(config.gateway_socket, self.spool) if config.gateway_socket else None
        self._handoff_wake = asyncio.Event()
        self.reports: list[SessionReport] = []

    def wake_handoff(self) -> None:
        self._handoff_wake.set()

    # ------------------------------------------------------------------ one session
    async def session(self, credential: Credential, sealer: Sealer | None = None) -> SessionReport:
        """Connect to the credential's PHD once, collect everything, seal and spool it."""
        if sealer is None:
            sealer = await asyncio.to_thread(Sealer, credential)
        report = SessionReport(device_id=credential.device_id)
        collector = _Collector(self, credential, sealer, report)
        link = await PhdLink.open(credential.phd.address, self.backends, self.config.policy)
        try:
            await self._run_session(link, credential, collector, report)
        except BleError as exc:
            report.error = exc.reason.value
            logger.info("session with %s ended early: %s", credential.device_id, exc.reason)
        finally:
            with contextlib.suppress(BleError):
                await link.close()
            await collector.drain()
            await collector.flush()
            self.reports.append(report)
        return report

    async def _run_session(
        self, link: PhdLink, credential: Credential, collector: _Collector, report: SessionReport
    ) -> None:
        security = link.security
        report.pairing = security.method.value if security is not None else "none"
        info = await link.device_information()
        kinds = link.kinds()
        phd = replace(
            credential.phd,
            kind=",".join(kinds),
            **{k: v for k, v in info.items() if k in PhdInfo.__dataclass_fields__},
        )
        if phd != credential.phd:
            await asyncio.to_thread(credential.set_phd, phd)
        collector.phd = {
            **{k: v for k, v in phd.to_json().items() if v and k != "address"},
            "pairing": report.pairing,
            "encrypted": "yes" if security is not None and security.encrypted else "no",
        }

        offset = await self._clock_offset(link)
        report.clock_offset = offset
        collector.clock_offset = offset
        if offset is not None:
            collector.phd["clock_offset_s"] = str(int(offset.total_seconds()))
            report.clock_corrected = abs(offset) >= CLOCK_TOLERANCE
            if report.clock_corrected:
                logger.info(
                    "device %s clock off by %ds; readings corrected and flagged",
                    credential.device_id,
                    int(offset.total_seconds()),
                )

        await link.subscribe(collector.put, self.now)
        if link.has(0x2A52):
            await self._download(link, credential, collector)
        await self._collect_until_idle(link, collector)

        if (
            self.config.set_device_clock
            and report.clock_corrected
            and link.writable(CURRENT_TIME)
            and not link.lost.is_set()
        ):
            # After this session's readings (all stamped by the old clock) are in: fix the
            # PHD's clock so that the next session needs no correction.
            await link.write(CURRENT_TIME, current_time_value(self.now().replace(tzinfo=None)))
            report.clock_set = True

    async def _clock_offset(self, link: PhdLink) -> timedelta | None:
        if not link.has(CURRENT_TIME):
            return None
        raw = await link.read(CURRENT_TIME)
        agent_now = self.now()
        device_now = device_clock(raw)
        if device_now is None:
            return None
        # apply_clock_correction wants agent clock minus device clock.
        return agent_now - device_now.replace(tzinfo=UTC)

    async def _download(self, link: PhdLink, credential: Credential, collector: _Collector) -> None:
        """RACP (GLS 3.108): all records the first time, then those >= the cursor."""
        cursor = credential.racp_next
        request = (
            RacpRequest(op_code=RacpOpCode.REPORT_STORED_RECORDS, operator=RacpOperator.ALL_RECORDS)
            if cursor is None
            else RacpRequest(
                op_code=RacpOpCode.REPORT_STORED_RECORDS,
                operator=RacpOperator.GREATER_THAN_OR_EQUAL,
                filter_type=RacpFilterType.SEQUENCE_NUMBER,
                minimum=min(cursor, 0xFFFF),
            )
        )
        raw = await link.racp(request.encode(), wait=self.config.racp_timeout)
        await collector.drain()
        await collector.flush()
        try:
            response = decode_racp(raw)
        except ParseError as exc:
            raise BleError(BleFailure.RACP_FAILED, "malformed RACP response") from exc
        if (
            not isinstance(response, RacpResponse)
            or response.request_op_code != RacpOpCode.REPORT_STORED_RECORDS
        ):
            raise BleError(BleFailure.RACP_FAILED, "unexpected RACP response")
        if response.response_code not in _RACP_DONE:
            raise BleError(BleFailure.RACP_FAILED, response.response_code.name.lower())

    async def _collect_until_idle(self, link: PhdLink, collector: _Collector) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        collector.last_arrival = loop.time()
        while not link.lost.is_set():
            await collector.drain()
            now = loop.time()
            if now - collector.last_arrival >= self.config.session_idle:
                break
            if now - started >= self.config.session_max:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.lost.wait(), 0.05)

    # ------------------------------------------------------------------ long-running
    async def deliver(self) -> DeliveryReport | None:
        if self.handoff is None:
            return None
        return await self.handoff.deliver()

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Run until ``stop`` is set (or, with ``once``, one session per PHD then a delivery)."""
        credentials = await asyncio.to_thread(self.home.credentials)
        if not credentials:
            raise AgentError("no enrolled device: run 'phd agent enroll' first")
        await asyncio.to_thread(self.spool.ensure)
        handoff = asyncio.create_task(self._handoff_loop(stop))
        workers = [asyncio.create_task(self._device_loop(c, stop, once)) for c in credentials]
        try:
            await asyncio.gather(*workers)
            if once:
                await self.deliver()
        finally:
            stop.set()
            self._handoff_wake.set()
            for task in (*workers, handoff):
                task.cancel()
            await asyncio.gather(*workers, handoff, return_exceptions=True)

    async def _device_loop(self, credential: Credential, stop: asyncio.Event, once: bool) -> None:
        try:
            sealer = await asyncio.to_thread(Sealer, credential)
        except AgentError as exc:
            # One broken credential must not stop the agent serving the other PHDs.
            logger.error("device %s disabled: %s", credential.device_id, exc)
            return
        failures = 0
        while not stop.is_set():
            try:
                await self.session(credential, sealer)
                failures = 0
                delay = self.config.poll_interval
            except PolicyError as exc:
                logger.warning("device %s refused by policy: %s", credential.device_id, exc)
                failures += 1
                delay = backoff_delay(failures, base=1.0, cap=300.0)
            except BleError as exc:
                logger.info("device %s unreachable: %s", credential.device_id, exc.reason)
                failures += 1
                delay = backoff_delay(failures, base=1.0, cap=60.0)
            except AgentError as exc:  # spool full, disk error: nothing was confirmed; retry
                logger.error("device %s session failed: %s", credential.device_id, exc)
                failures += 1
                delay = backoff_delay(failures, base=5.0, cap=300.0)
            if once:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _handoff_loop(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                report = await self.deliver()
            except (AgentError, OSError) as exc:
                # A damaged spool file or a full disk: keep trying; the envelopes stay put.
                logger.error("handoff failed: %s", type(exc).__name__)
                report = None
                attempt += 1
            if report is not None and (not report.reachable or report.busy) and report.remaining:
                attempt += 1
                delay = backoff_delay(attempt, base=0.5, cap=60.0)
            elif report is None and attempt:
                delay = backoff_delay(attempt, base=0.5, cap=60.0)
            else:
                attempt = 0
                delay = self.config.handoff_interval
            self._handoff_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._handoff_wake.wait(), delay)
