"""The generated broker config against a real mosquitto: mTLS, ACLs, takeover, revocation."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta

import pytest

from hospital_server.broker.control import add_gateway, disable_gateway, enable_gateway
from hospital_server.pki.ca import generate_crls, issue_client_certificate, revoke
from hospital_server.pki.layout import PkiLayout
from mobile_gateway.errors import MqttError
from mobile_gateway.mqtt import MqttConnection, MqttSettings
from mobile_gateway.tls import client_context
from tests.mosquitto_fixtures import MosquittoBroker

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 135
ADMIN_ACTION = 152


def gw_ctx(layout: PkiLayout, name: str, trust: PkiLayout | None = None) -> ssl.SSLContext:
    return client_context(
        ca_file=(trust or layout).ca_cert("service"),
        cert_file=layout.gateway_chain(name),
        key_file=layout.gateway_key(name),
    )


async def connect(
    broker: MosquittoBroker, ctx: ssl.SSLContext, client_id: str = "x"
) -> MqttConnection:
    return await MqttConnection.connect(
        MqttSettings(
            host=broker.host,
            port=broker.port,
            client_id=client_id,
            ssl_context=ctx,
            connect_timeout=5,
        )
    )


async def refused(broker: MosquittoBroker, ctx: ssl.SSLContext) -> MqttError:
    """The session must never start: no CONNACK. With TLS 1.3 the broker's verdict on the
    client certificate arrives after the client's side of the handshake, so the refusal shows
    as a TLS error or as the connection dropped before CONNACK, never as an MQTT session."""
    try:
        conn = await connect(broker, ctx)
    except MqttError as exc:
        err = exc
    else:
        await conn.close()
        pytest.fail("the broker accepted a client it must refuse")
    assert err.reason != "connect_timeout"
    assert err.code != NOT_AUTHORIZED
    return err


async def test_gateway_publishes_only_to_its_own_topic(mosquitto: MosquittoBroker) -> None:
    conn = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-1"), "gw-1")
    try:
        assert await conn.publish("phd/v1/gw/gw-1/up", b"\xa0") < 0x80
        with pytest.raises(MqttError) as info:
            await conn.publish("phd/v1/gw/gw-2/up", b"\xa0")
        assert info.value.code == NOT_AUTHORIZED
        with pytest.raises(MqttError) as info:
            await conn.publish("phd/v1/gw/gw-1/ack", b"\xa0")  # forging the hospital's acks
        assert info.value.code == NOT_AUTHORIZED
        await conn.subscribe("phd/v1/gw/gw-1/ack")
        await conn.subscribe("phd/v1/gw/gw-1/ctl")
        for topic in ("#", "phd/v1/gw/gw-2/ack", "phd/v1/gw/+/up", "$share/ingest/phd/v1/gw/+/up"):
            with pytest.raises(MqttError) as info:
                await conn.subscribe(topic)
            assert info.value.code == NOT_AUTHORIZED, topic
    finally:
        await conn.close()


async def test_no_client_certificate_refused(mosquitto: MosquittoBroker) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(mosquitto.layout.ca_cert("service")))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    await refused(mosquitto, ctx)


async def test_certificate_from_a_rogue_ca_with_our_names_refused(
    mosquitto: MosquittoBroker, rogue_pki: PkiLayout
) -> None:
    ctx = gw_ctx(rogue_pki, "gw-1", trust=mosquitto.layout)
    await refused(mosquitto, ctx)


async def test_gateway_refuses_a_broker_outside_the_pinned_service_ca(
    mosquitto: MosquittoBroker, rogue_pki: PkiLayout
) -> None:
    # Our gateway, but trusting the rogue service CA: the real broker's certificate fails.
    ctx = gw_ctx(mosquitto.layout, "gw-1", trust=rogue_pki)
    with pytest.raises(MqttError, match="tls_refused"):
        await connect(mosquitto, ctx)


async def test_expired_certificate_refused(fresh_mosquitto: MosquittoBroker) -> None:
    layout = fresh_mosquitto.layout
    t = datetime.now(UTC)
    old = await asyncio.to_thread(
        issue_client_certificate,
        layout,
        "gw-old",
        not_before=t - timedelta(days=3),
        not_after=t - timedelta(days=1),
    )
    ctx = client_context(ca_file=layout.ca_cert("service"), cert_file=old.chain, key_file=old.key)
    await refused(fresh_mosquitto, ctx)


async def test_client_id_takeover_is_impossible(mosquitto: MosquittoBroker) -> None:
    victim = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-1"), "gw-1")
    try:
        # gw-2 claims gw-1's client id; use_username_as_clientid makes it "gw-2" instead.
        attacker = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-2"), "gw-1")
        try:
            await asyncio.sleep(0.3)
            assert not victim.closed.done(), "the victim's session was taken over"
            assert await victim.publish("phd/v1/gw/gw-1/up", b"\xa0") < 0x80
            with pytest.raises(MqttError) as info:
                await attacker.publish("phd/v1/gw/gw-1/up", b"\xa0")
            assert info.value.code == NOT_AUTHORIZED
        finally:
            await attacker.close()
    finally:
        await victim.close()


async def test_revoked_gateway_cut_off_live_and_cannot_return(
    fresh_mosquitto: MosquittoBroker,
) -> None:
    broker = fresh_mosquitto
    layout = broker.layout
    live = await connect(broker, gw_ctx(layout, "gw-1"), "gw-1")
    other = await connect(broker, gw_ctx(layout, "gw-2"), "gw-2")
    try:
        assert await live.publish("phd/v1/gw/gw-1/up", b"\xa0") < 0x80
        # What the server does on `gateway.revoked`: CRL, SIGHUP, then dynsec.
        await asyncio.to_thread(revoke, layout, "gw-1", "keyCompromise")
        await asyncio.to_thread(generate_crls, layout)
        await asyncio.to_thread(broker.reload)
        await asyncio.to_thread(disable_gateway, broker.control_settings(), "gw-1")
        err = await asyncio.wait_for(live.closed, 5)
        assert err.code == ADMIN_ACTION
        # Cannot come back: refused at the TLS handshake (certificate revoked).
        await refused(broker, gw_ctx(layout, "gw-1"))
        # Everyone else is untouched: same session, still publishing.
        assert not other.closed.done()
        assert await other.publish("phd/v1/gw/gw-2/up", b"\xa0") < 0x80
    finally:
        await live.close()
        await other.close()


async def test_disabled_gateway_has_no_rights_even_before_crl_reload(
    mosquitto: MosquittoBroker,
) -> None:
    # Dynamic security alone (no CRL change): kicked, and a reconnect can do nothing.
    settings = mosquitto.control_settings()
    live = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-2"), "gw-2")
    try:
        await asyncio.to_thread(disable_gateway, settings, "gw-2")
        err = await asyncio.wait_for(live.closed, 5)
        assert err.code == ADMIN_ACTION
        back = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-2"), "gw-2")
        try:
            with pytest.raises(MqttError) as info:
                await back.publish("phd/v1/gw/gw-2/up", b"\xa0")
            assert info.value.code == NOT_AUTHORIZED
            with pytest.raises(MqttError):
                await back.subscribe("phd/v1/gw/gw-2/ack")
        finally:
            await back.close()
        await asyncio.to_thread(enable_gateway, settings, "gw-2")
        restored = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-2"), "gw-2")
        try:
            assert await restored.publish("phd/v1/gw/gw-2/up", b"\xa0") < 0x80
        finally:
            await restored.close()
    finally:
        await live.close()


async def test_gateway_cannot_use_the_control_api(mosquitto: MosquittoBroker) -> None:
    conn = await connect(mosquitto, gw_ctx(mosquitto.layout, "gw-1"), "gw-1")
    try:
        with pytest.raises(MqttError) as info:
            await conn.publish("$CONTROL/dynamic-security/v1", b"{}", content_type=None)
        assert info.value.code == NOT_AUTHORIZED
    finally:
        await conn.close()


async def test_device_credential_cannot_act_on_the_broker(
    fresh_mosquitto: MosquittoBroker,
) -> None:
    # A stolen device key (device CA, no clientAuth EKU) tried as a TLS client certificate,
    # and a gateway-CA certificate whose name is not a configured gateway.
    from hospital_server.pki.ca import issue_gateway
    from phd_protocol.pki.purpose import Purpose

    layout = fresh_mosquitto.layout
    device = await asyncio.to_thread(
        issue_client_certificate, layout, "dev-1", ca="device", purpose=Purpose.DEVICE_CREDENTIAL
    )
    ctx = client_context(
        ca_file=layout.ca_cert("service"), cert_file=device.chain, key_file=device.key
    )
    await refused(fresh_mosquitto, ctx)
    # A newly issued gateway that the broker has not been told about yet: default deny.
    await asyncio.to_thread(issue_gateway, layout, "gw-new")
    conn = await connect(fresh_mosquitto, gw_ctx(layout, "gw-new"), "gw-new")
    try:
        with pytest.raises(MqttError) as info:
            await conn.publish("phd/v1/gw/gw-new/up", b"\xa0")
        assert info.value.code == NOT_AUTHORIZED
    finally:
        await conn.close()
    # Added at run time through dynsec: no broker restart, and only its own topic.
    await asyncio.to_thread(add_gateway, fresh_mosquitto.control_settings(), "gw-new")
    conn = await connect(fresh_mosquitto, gw_ctx(layout, "gw-new"), "gw-new")
    try:
        assert await conn.publish("phd/v1/gw/gw-new/up", b"\xa0") < 0x80
        with pytest.raises(MqttError) as info:
            await conn.publish("phd/v1/gw/gw-1/up", b"\xa0")
        assert info.value.code == NOT_AUTHORIZED
    finally:
        await conn.close()
