"""The hospital-operated MQTT broker (mosquitto 2.0): config generation from the PKI and the
run-time control client (dynamic security) used to cut off a revoked gateway.

See docs/broker.md for what was verified on mosquitto 2.0.11 and why the design is this one.
"""
