"""Pure parts of the gateway: backoff, config loading, link table, ingress path safety."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobile_gateway.app import loop_factory
from mobile_gateway.backoff import Backoff, backoff_delay
from mobile_gateway.config import GatewayConfig, load_config
from mobile_gateway.errors import ConfigError
from mobile_gateway.ingress import IngressServer
from mobile_gateway.metrics import GatewayMetrics
from mobile_gateway.uplink import LINK_TRANSITIONS, LinkState, ack_topic, up_topic


def test_backoff_grows_caps_and_jitters() -> None:
    b = Backoff(base=1.0, cap=8.0, jitter=0.5)
    assert [b.delay(n, 0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.delay(3, 0.999) == pytest.approx(4.0 * 0.5005)
    assert b.delay(10_000, 0.0) == 8.0  # no overflow for absurd attempt counts
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, base=1, cap=2, jitter=0.5, sample=0.0)
    with pytest.raises(ValueError, match="sample"):
        backoff_delay(1, base=1, cap=2, jitter=0.5, sample=1.0)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=5.0, cap=1.0)


@given(st.integers(1, 200), st.floats(0, 0.999), st.floats(0, 1))
def test_backoff_stays_within_bounds(attempt: int, sample: float, jitter: float) -> None:
    d = backoff_delay(attempt, base=0.5, cap=30.0, jitter=jitter, sample=sample)
    assert 0.0 <= d <= 30.0
    assert d >= min(30.0, 0.5 * 2 ** min(attempt - 1, 62)) * (1 - jitter) - 1e-9


def test_link_state_table_has_no_dead_ends() -> None:
    reachable = {LinkState.DISCONNECTED}
    frontier = [LinkState.DISCONNECTED]
    while frontier:
        state = frontier.pop()
        for (src, _event), dst in LINK_TRANSITIONS.items():
            if src is state and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    assert reachable == {
        LinkState.DISCONNECTED,
        LinkState.CONNECTING,
        LinkState.CONNECTED,
        LinkState.BACKOFF,
    }
    # Every non-initial state can get back to CONNECTED (reconnect forever).
    assert (LinkState.BACKOFF, "retry") in LINK_TRANSITIONS
    assert up_topic("gw-1") == "phd/v1/gw/gw-1/up"
    assert ack_topic("gw-1") == "phd/v1/gw/gw-1/ack"


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_resolves_paths_and_modes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[broker]\nhost = "mqtt.example"\nca_file = "ca.crt"\ncert_file = "gw.crt"\n'
        'key_file = "gw.key"\n[ingress]\nmode = "0600"\n[uplink]\nack_timeout = 5.0\n',
    )
    cfg = load_config(path, broker_port=18883)
    assert cfg.ca_file == (tmp_path / "ca.crt").resolve()
    assert cfg.socket_mode == 0o600
    assert cfg.ack_timeout == 5.0
    assert cfg.broker_port == 18883


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[broker]\nhost = "h"\nca_file = "a"\ncert_file = "b"\nkey_file = "c"\nbogus = 1\n',
         "broker.bogus"),
        ('[nope]\nx = 1\n', "nope"),
        ('[broker]\nhost = "h"\n', "broker"),
        ('[broker]\nhost = "h"\nca_file = "a"\ncert_file = "b"\nkey_file = "c"\n'
         '[ingress]\nmode = "0666"\n', "ingress.mode"),
        ('[broker]\nhost = "h"\nca_file = "a"\ncert_file = "b"\nkey_file = "c"\n'
         '[metrics]\nhost = "0.0.0.0"\n', "metrics.host"),
        ('[broker]\nhost = "h"\nca_file = "a"\ncert_file = "b"\nkey_file = "c"\n'
         '[uplink]\nbatch_max_count = 65\n', "uplink.batch_max_count"),
        ('[broker]\nhost = "h"\nca_file = "a"\ncert_file = "b"\nkey_file = "c"\n'
         '[gateway]\nevent_loop = "trio"\n', "gateway.event_loop"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_with_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert info.value.field == field


def test_config_defaults_are_safe() -> None:
    cfg = GatewayConfig(broker_host="h", ca_file=Path("a"), cert_file=Path("b"), key_file=Path("c"))
    assert cfg.socket_mode == 0o660
    assert cfg.metrics_host == "127.0.0.1"
    with pytest.raises(ValueError, match="others"):
        IngressServer(Path("x"), None, GatewayMetrics(), mode=0o666)  # type: ignore[arg-type]  # refused before use


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    assert (
        GatewayConfig(
            broker_host="h", ca_file=Path("a"), cert_file=Path("b"), key_file=Path("c")
        ).event_loop
        == "auto"
    )
    assert loop_factory("auto") is uvloop.new_event_loop  # installed by the gateway extra
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a platform it is not built for
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError) as info:
        loop_factory("uvloop")
    assert info.value.field == "gateway.event_loop"


async def test_ingress_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    from mobile_gateway.store import AsyncOutbox

    target = tmp_path / "not-a-socket"
    await asyncio.to_thread(target.write_text, "precious")
    box = await AsyncOutbox.open(tmp_path / "o.db", max_entries=10, max_bytes=1000)
    server = IngressServer(target, box, GatewayMetrics())
    with pytest.raises(OSError, match="not a socket"):
        await server.start()
    await box.close()


async def test_ingress_limits_connections_and_idle_agents(tmp_path: Path) -> None:
    from mobile_gateway.store import AsyncOutbox
    from phd_protocol.ingress import IngressStatus, ReplyReader, encode_request

    box = await AsyncOutbox.open(tmp_path / "o.db", max_entries=10, max_bytes=10_000)
    accepted: list[int] = []
    server = IngressServer(
        tmp_path / "s" / "in.sock",
        box,
        GatewayMetrics(),
        mode=0o600,
        max_connections=1,
        idle_timeout=0.3,
        on_accepted=lambda: accepted.append(1),
    )
    await server.start()
    path = str(tmp_path / "s" / "in.sock")
    try:
        mode = (await asyncio.to_thread((tmp_path / "s" / "in.sock").stat)).st_mode
        assert mode & 0o777 == 0o600
        r1, w1 = await asyncio.open_unix_connection(path)
        w1.write(encode_request(b"one"))
        assert ReplyReader().feed(await r1.read(64))[0].status is IngressStatus.ACCEPTED
        r2, w2 = await asyncio.open_unix_connection(path)  # over the limit
        reply = ReplyReader().feed(await r2.read(64))[0]
        assert (reply.status, reply.reason) == (IngressStatus.BUSY, "too_many_connections")
        w2.close()
        # An agent that goes quiet is disconnected after the idle timeout.
        assert await asyncio.wait_for(r1.read(64), 2) == b""
        w1.close()
        assert accepted == [1]
    finally:
        await server.stop()
        await box.close()


async def test_a_settle_whose_caller_is_cancelled_still_happens(tmp_path: Path) -> None:
    # A session that ends while a settle waits behind other outbox work must not drop the
    # settle: the uplink has already forgotten the batch, so nothing would requeue it.
    import threading

    from mobile_gateway.outbox import EntryEvent, Settlement
    from mobile_gateway.store import AsyncOutbox

    box = await AsyncOutbox.open(tmp_path / "o.db", max_entries=10, max_bytes=10_000)
    entry = await box.put(b"sealed")
    (claimed,) = await box.claim(batch_id="b1", max_count=10, max_bytes=10_000)
    assert claimed.entry_id == entry
    gate = threading.Event()
    blocker = asyncio.ensure_future(box._run(gate.wait))  # keeps the outbox thread busy
    settle = asyncio.create_task(box.settle([Settlement(entry_id=entry, event=EntryEvent.STORED)]))
    await asyncio.sleep(0.05)
    settle.cancel()  # the session ends while the settle is still queued
    gate.set()
    await blocker
    with contextlib.suppress(asyncio.CancelledError):
        await settle
    stats = await box.stats()
    await box.close()
    assert (stats.pending, stats.in_flight, stats.done_total) == (0, 0, 1)
