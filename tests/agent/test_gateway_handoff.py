"""The agent's handoff against the real gateway ingress and its durable SQLite outbox.

No fake on the gateway side: mobile_gateway's IngressServer commits each envelope to its
outbox before answering "accepted"; when the outbox is full it answers "busy" and the agent
must keep the envelope spooled until a later delivery succeeds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from device_agent.agent import Agent, AgentConfig
from device_agent.virtual.phds import HeartRateSensor, Thermometer
from mobile_gateway.ingress import IngressServer
from mobile_gateway.metrics import GatewayMetrics
from mobile_gateway.store import AsyncOutbox
from tests.agent.conftest import World


async def test_spooled_envelopes_reach_the_gateway_outbox_and_busy_keeps_them(
    world: World, tmp_path: Path
) -> None:
    socket = tmp_path / "gw" / "ingress.sock"
    outbox = await AsyncOutbox.open(tmp_path / "outbox.db", max_entries=2, max_bytes=1 << 20)
    server = IngressServer(socket, outbox, GatewayMetrics(), mode=0o600)
    await server.start()
    try:
        agent = Agent(
            AgentConfig(home=world.home.root, gateway_socket=socket, session_idle=0.3, batch_max=1),
            world.backends,
        )
        for cls in (Thermometer, HeartRateSensor):
            phd = await world.start(cls(world.radio, live_count=2, interval=0.02))
            credential = await world.make_credential(phd.address)
            await agent.session(credential)
        spooled = len(await asyncio.to_thread(agent.spool.pending))
        assert spooled >= 4  # batch_max=1: one envelope per reading

        report = await agent.deliver()
        assert report is not None
        assert report.accepted == 2  # the outbox holds two ...
        assert report.busy  # ... then the gateway answers busy
        assert report.remaining == spooled - 2
        stats = await outbox.stats()
        assert stats.pending == 2
        assert len(await asyncio.to_thread(agent.spool.pending)) == spooled - 2
    finally:
        await server.stop()
        await outbox.close()
