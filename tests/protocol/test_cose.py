"""phd_protocol.cose: known answers, interoperability with pycose, and refusals.

pycose (test-only dependency) is the independent implementation: it must verify what we sign,
and we must verify what it signs, for both algorithms. pycose 1.1.0 expects cbor2 < 6 shapes
(mutable list/dict inside a tag), so messages we hand it are re-shaped with cbor2 first; its
cryptography and Sig_structure code are used unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID, Algorithm
from pycose.keys.cosekey import CoseKey
from pycose.messages.sign1message import Sign1Message

from phd_protocol import cbor, cose, crypto
from phd_protocol.cose import CoseError, Sign1
from phd_protocol.crypto import CryptoError

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "envelope" / "cose_sign1_eddsa.json").read_text(
        "utf-8"
    )
)
KID32 = bytes(range(32))
ALGS = [crypto.COSE_EDDSA, crypto.COSE_ES256]


def _pem(key: crypto.SigningKey) -> str:
    return crypto.private_key_pem(key).decode("ascii")


def _pycose_decode(data: bytes) -> Any:
    tagged = cbor2.loads(data)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    return Sign1Message.from_cose_obj(
        [protected, dict(unprotected), payload, signature], allow_unknown_attributes=True
    )


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"payload{len(c['payload'])}")
def test_eddsa_known_answers_from_pycose(case: dict[str, str]) -> None:
    key = crypto.load_private_key_pem(VECTORS["key_pem"].encode())
    assert isinstance(key, crypto.SigningKey)
    kid = bytes.fromhex(VECTORS["kid"])
    payload = bytes.fromhex(case["payload"])
    expected = bytes.fromhex(case["cose_sign1"])
    assert cose.sign1(key, kid=kid, payload=payload) == expected
    message = Sign1.decode(expected)
    assert (message.alg, message.kid, message.payload) == (crypto.COSE_EDDSA, kid, payload)
    cose.verify_sign1(message, key.public_key())


@pytest.mark.parametrize("alg", ALGS)
def test_pycose_verifies_ours(alg: int) -> None:
    key = crypto.generate_signing_key(alg)
    ours = cose.sign1(key, kid=KID32, payload=b"reading batch")
    theirs = _pycose_decode(ours)
    theirs.key = CoseKey.from_pem_public_key(crypto.public_key_pem(key.public_key()).decode())
    assert theirs.verify_signature()
    assert theirs.phdr[KID] == KID32
    assert theirs.payload == b"reading batch"
    # And pycose refuses a tampered copy of ours (the interop check can fail).
    tampered = bytearray(ours)
    tampered[-1] ^= 1
    bad = _pycose_decode(bytes(tampered))
    bad.key = theirs.key
    assert not bad.verify_signature()


@pytest.mark.parametrize("alg", ALGS)
def test_we_verify_pycose(alg: int) -> None:
    key = crypto.generate_signing_key(alg)
    message = Sign1Message(
        phdr={Algorithm: EdDSA if alg == crypto.COSE_EDDSA else Es256, KID: KID32},
        payload=b"made by pycose",
    )
    message.key = CoseKey.from_pem_private_key(_pem(key))
    parsed = Sign1.decode(message.encode())
    assert (parsed.alg, parsed.kid, parsed.payload) == (alg, KID32, b"made by pycose")
    cose.verify_sign1(parsed, key.public_key())
    with pytest.raises(CryptoError):
        cose.verify_sign1(parsed, crypto.generate_signing_key(alg).public_key())


@pytest.mark.parametrize("alg", ALGS)
def test_round_trip_and_every_signed_region_matters(alg: int) -> None:
    key = crypto.generate_signing_key(alg)
    data = cose.sign1(key, kid=KID32, payload=b"payload bytes")
    cose.verify_sign1(Sign1.decode(data), key.public_key())
    # Flip one bit in every byte: either the structure is refused or the signature fails.
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises((CoseError, CryptoError)):
            cose.verify_sign1(Sign1.decode(bytes(tampered)), key.public_key())


def test_algorithm_confusion_is_refused() -> None:
    ed = crypto.generate_signing_key(crypto.COSE_EDDSA)
    es = crypto.generate_signing_key(crypto.COSE_ES256)
    message = Sign1.decode(cose.sign1(ed, kid=KID32, payload=b"x"))
    with pytest.raises(CryptoError):
        cose.verify_sign1(message, es.public_key())
    # A message claiming ES256 but signed with Ed25519 over the same header bytes.
    protected = cbor.encode({1: crypto.COSE_ES256, 4: KID32})
    signature = crypto.sign(ed, cose.sig_structure(protected, b"x"))
    forged = cbor.encode(cbor.Tag(18, [protected, {}, b"x", signature]))
    with pytest.raises(CryptoError):
        cose.verify_sign1(Sign1.decode(forged), ed.public_key())


def _message(
    protected: Any, unprotected: Any = None, payload: Any = b"p", sig: Any = None
) -> bytes:
    body = [
        protected,
        {} if unprotected is None else unprotected,
        payload,
        b"\x00" * 64 if sig is None else sig,
    ]
    return cbor.encode(cbor.Tag(18, body))


GOOD_HEADER = cbor.encode({1: -8, 4: KID32})


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (cbor.encode([GOOD_HEADER, {}, b"p", b"\x00" * 64]), "untagged"),
        (cbor.encode(cbor.Tag(98, [GOOD_HEADER, {}, b"p", b"\x00" * 64])), "COSE_Sign (98)"),
        (cbor.encode(cbor.Tag(18, [GOOD_HEADER, {}, b"p"])), "three items"),
        (_message(cbor.encode({1: -8})), "no kid"),
        (_message(cbor.encode({1: -8, 4: KID32, 3: 0})), "extra header"),
        (_message(cbor.encode({1: -35, 4: KID32})), "ES384 unsupported"),
        (_message(cbor.encode({1: "EdDSA", 4: KID32})), "alg as text"),
        (_message(cbor.encode({1: -8, 4: b""})), "empty kid"),
        (_message(cbor.encode({1: -8, 4: b"k" * 65})), "kid too long"),
        (_message(cbor.encode({1: -8, 4: "kid"})), "kid as text"),
        (_message(b"\xa2\x04\x41k\x01\x27"), "header keys unsorted"),
        (_message(b""), "empty protected bytes"),
        (_message({1: -8, 4: KID32}), "protected not wrapped in bstr"),
        (_message(GOOD_HEADER, unprotected={4: KID32}), "kid in unprotected"),
        (_message(GOOD_HEADER, payload=None), "detached payload"),
        (_message(GOOD_HEADER, sig=b"\x00" * 63), "short signature"),
        (_message(GOOD_HEADER, sig=b"\x00" * 72), "DER-sized signature"),
        (_message(GOOD_HEADER) + b"\x00", "trailing bytes"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_structure_outside_the_profile_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(CoseError):
        Sign1.decode(data)


def test_sign_refuses_bad_kid() -> None:
    with pytest.raises(ValueError, match="kid"):
        cose.sign1(crypto.generate_signing_key(), kid=b"", payload=b"x")


# --------------------------------------------------------------------------- fast paths
# sign1/sig_structure assemble their bytes from parts and Sign1.decode reads the profile's one
# layout directly; the generic encoder and the strict parser are their oracles.


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
@pytest.mark.parametrize("alg", ALGS)
def test_assembled_bytes_are_the_generic_encoding(size: int, alg: int) -> None:
    key = crypto.generate_signing_key(alg)
    payload = bytes(i % 251 for i in range(size))
    signed = cose.sign1(key, kid=KID32, payload=payload)
    message = Sign1.decode(signed)
    expected = cbor.encode(
        cbor.Tag(18, [message.protected, {}, message.payload, message.signature])
    )
    assert signed == expected
    assert message.payload == payload
    assert cose.sig_structure(message.protected, payload) == cbor.encode(
        ["Signature1", message.protected, b"", payload]
    )
    cose.verify_sign1(message, key.public_key())


def _outcome(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", Sign1.decode(data)
    except CoseError as exc:
        return "refused", str(exc)


def _strict_outcome(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", Sign1._decode_strict(data, max_size=cbor.DEFAULT_MAX_SIZE)
    except CoseError as exc:
        return "refused", str(exc)


_FAST_KEY = crypto.generate_signing_key()


@given(st.data())
@settings(max_examples=400)
def test_fast_parser_agrees_with_the_strict_parser(data: st.DataObject) -> None:
    payload = data.draw(st.binary(max_size=300))
    kid = data.draw(st.binary(min_size=1, max_size=40))
    mutated = bytearray(cose.sign1(_FAST_KEY, kid=kid, payload=payload))
    for _ in range(data.draw(st.integers(0, 3))):
        # Half the mutations hit the heads and the protected header, where layouts differ.
        index = data.draw(st.one_of(st.integers(0, 60), st.integers(0, len(mutated) - 1)))
        if index < len(mutated):
            mutated[index] = data.draw(st.integers(0, 255))
    # Truncated or extended (trailing bytes) about as often as left at full length.
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(mutated))))
    candidate = bytes(mutated[:cut]) + data.draw(st.binary(max_size=2))
    assert _outcome(candidate) == _strict_outcome(candidate)
