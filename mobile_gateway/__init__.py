"""mobile_gateway: local ingress from agents, crash-safe outbox, MQTT v5 mTLS uplink, acks.
It relays sealed envelopes it cannot read. paho is imported only in its adapter module."""
