"""The crypto recipes: round trips, and every tampering refused with the one opaque error."""

from __future__ import annotations

import pytest

from phd_protocol import crypto
from phd_protocol.crypto import CryptoError


@pytest.mark.parametrize("alg", [crypto.COSE_EDDSA, crypto.COSE_ES256])
def test_sign_verify_and_tamper(alg: int) -> None:
    key = crypto.generate_signing_key(alg)
    assert crypto.signature_algorithm(key) == alg
    sig = crypto.sign(key, b"batch")
    crypto.verify(key.public_key(), sig, b"batch")
    with pytest.raises(CryptoError):
        crypto.verify(key.public_key(), sig, b"batcH")
    with pytest.raises(CryptoError):
        crypto.verify(key.public_key(), bytes([sig[0] ^ 1]) + sig[1:], b"batch")
    other = crypto.generate_signing_key(alg)
    with pytest.raises(CryptoError):
        crypto.verify(other.public_key(), sig, b"batch")


def test_es256_signature_is_fixed_size_raw() -> None:
    key = crypto.generate_signing_key(crypto.COSE_ES256)
    assert len(crypto.sign(key, b"x")) == 64
    with pytest.raises(CryptoError):
        crypto.verify(key.public_key(), b"\x30" + b"\x00" * 70, b"x")


def test_hpke_round_trip_and_refusals() -> None:
    key = crypto.generate_hpke_key()
    sealed = crypto.hpke_seal(key.public_key(), b"payload", info=b"label|kid1")
    assert len(sealed) == crypto.HPKE_ENC_SIZE + len(b"payload") + crypto.HPKE_TAG_SIZE
    assert crypto.hpke_open(key, sealed, info=b"label|kid1") == b"payload"
    with pytest.raises(CryptoError):  # info binds the recipient key id
        crypto.hpke_open(key, sealed, info=b"label|kid2")
    with pytest.raises(CryptoError):
        crypto.hpke_open(crypto.generate_hpke_key(), sealed, info=b"label|kid1")
    for i in (0, 31, 32, len(sealed) - 1):  # enc, ciphertext, tag
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            crypto.hpke_open(key, bytes(bad), info=b"label|kid1")
    with pytest.raises(CryptoError):
        crypto.hpke_open(key, sealed[:40], info=b"label|kid1")


def test_aead_binds_associated_data() -> None:
    key = bytes(range(32))
    sealed = crypto.aead_encrypt(key, b"120", aad=b"observation|row1|patient1")
    assert crypto.aead_decrypt(key, sealed, aad=b"observation|row1|patient1") == b"120"
    with pytest.raises(CryptoError):
        crypto.aead_decrypt(key, sealed, aad=b"observation|row2|patient1")
    with pytest.raises(CryptoError):
        crypto.aead_decrypt(
            key, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad=b"observation|row1|patient1"
        )
    with pytest.raises(ValueError, match="32-byte"):
        crypto.aead_encrypt(b"short", b"x", aad=b"")


def test_pem_round_trip_with_passphrase() -> None:
    key = crypto.generate_signing_key()
    pem = crypto.private_key_pem(key, passphrase=b"correct horse")
    assert b"ENCRYPTED" in pem
    loaded = crypto.load_private_key_pem(pem, passphrase=b"correct horse")
    assert crypto.public_key_pem(loaded.public_key()) == crypto.public_key_pem(key.public_key())
    with pytest.raises(ValueError, match="passphrase"):
        crypto.load_private_key_pem(pem, passphrase=b"wrong")
    with pytest.raises(ValueError, match="passphrase"):
        crypto.load_private_key_pem(pem)


def test_hmac_refuses_short_keys() -> None:
    assert len(crypto.hmac_sha256(b"k" * 32, b"x")) == 32
    with pytest.raises(ValueError, match="at least 32"):
        crypto.hmac_sha256(b"short", b"x")
