"""Conformance canary: our bumble backend still implements the bleak surface bleak calls.

Un-mocked: these read the installed bleak. If a bleak upgrade adds an abstract method, renames
a parameter, or stops passing ``backend=`` through, this fails before the virtual tests do.
"""

from __future__ import annotations

import inspect

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from device_agent.virtual.bleak_backend import BumbleBleakClient, BumbleBleakScanner, bleak_backends
from device_agent.virtual.radio import VirtualRadio


def _abstract(cls: type) -> set[str]:
    return set(getattr(cls, "__abstractmethods__", set()))


@pytest.mark.parametrize(
    ("base", "ours"),
    [(BaseBleakClient, BumbleBleakClient), (BaseBleakScanner, BumbleBleakScanner)],
)
def test_every_abstract_member_is_implemented(base: type, ours: type) -> None:
    required = _abstract(base)
    assert required, "bleak's base class lost its abstract members: re-check the backend"
    assert not _abstract(ours), f"unimplemented: {sorted(_abstract(ours))}"
    for name in required:
        assert name in ours.__dict__, f"{name} is inherited, not implemented"


@pytest.mark.parametrize(
    ("base", "ours"),
    [(BaseBleakClient, BumbleBleakClient), (BaseBleakScanner, BumbleBleakScanner)],
)
def test_signatures_match_the_installed_bleak(base: type, ours: type) -> None:
    for name in sorted(_abstract(base) | {"__init__"}):
        theirs_attr = inspect.getattr_static(base, name)
        ours_attr = inspect.getattr_static(ours, name)
        if isinstance(theirs_attr, property):
            assert isinstance(ours_attr, property), f"{name} must stay a property"
            continue
        theirs_sig = inspect.signature(theirs_attr)
        ours_sig = inspect.signature(ours_attr)
        assert inspect.iscoroutinefunction(theirs_attr) == inspect.iscoroutinefunction(ours_attr), (
            name
        )
        # Every parameter bleak defines is accepted by ours, with the same kind.
        ours_params = ours_sig.parameters
        for param in theirs_sig.parameters.values():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours_params.values()), (
                    f"{name} must accept **kwargs"
                )
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                assert any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in ours_params.values())
                continue
            assert param.name in ours_params, f"{name}: missing parameter {param.name}"
            assert ours_params[param.name].kind == param.kind, f"{name}.{param.name} kind"


def test_the_facades_still_take_a_backend_class() -> None:
    for facade in (BleakClient, BleakScanner):
        assert "backend" in inspect.signature(facade.__init__).parameters
    client, scanner = bleak_backends(VirtualRadio())
    assert BleakClient("D0:00:00:00:00:10", backend=client).backend_id == client.__name__
    assert BleakScanner(backend=scanner).backend_id == scanner.__name__
