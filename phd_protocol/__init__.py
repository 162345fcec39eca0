"""phd_protocol: the sans-I/O core shared by the device agent, the gateway and the server.

It takes bytes and returns values, or values and returns bytes: IEEE 11073 and Bluetooth GATT
codecs, the observation model, certificate checks and enrollment messages, envelope seal/open
and the gateway wire formats. It never imports asyncio, bleak, paho, fastapi or sqlmodel, never
opens a socket or a file, never reads the clock or the OS random source except through
parameters that default to them, and never logs (tests/test_purity.py enforces the imports).

Public modules and their ``__all__`` are pinned by tests/test_public_api.py.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
