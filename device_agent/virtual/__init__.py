"""Virtual PHDs on bumble and the bleak backend that reaches them (tests, demo, ``--virtual``).

The only place in device_agent that imports bumble. The agent's own modules never import
this package; the CLI wiring and tests hand its bleak backend classes to the agent through
``device_agent.ble.BleBackends``.
"""
