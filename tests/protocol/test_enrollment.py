"""phd_protocol.enrollment: one-time code state machine, strict messages, signed renewal."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phd_protocol import crypto
from phd_protocol.enrollment import (
    CODE_ALPHABET,
    CODE_TTL,
    MAX_CODE_ATTEMPTS,
    CodeRecord,
    CodeState,
    EnrollmentError,
    EnrollmentReason,
    EnrollmentRequest,
    EnrollmentResponse,
    IngestKey,
    PhdInfo,
    RenewalRequest,
    ReplayWindow,
    attempt_code,
    cancel_code,
    code_handle,
    hash_code,
    ingest_key_id,
    issue_code,
    make_renewal_request,
    normalize_code,
    verify_renewal,
)
from phd_protocol.errors import PhdProtocolError
from phd_protocol.pki import (
    CaRole,
    Purpose,
    build_device_csr,
    build_issuing_ca,
    build_leaf,
    build_root_ca,
    certificate_pem,
    certificates_pem,
    load_certificate,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PEPPER = b"p" * 32
E = EnrollmentReason


def refused(reason: EnrollmentReason) -> pytest.RaisesExc[EnrollmentError]:
    return pytest.raises(EnrollmentError, check=lambda e: e.reason is reason)


# --------------------------------------------------------------------------- codes


def counter_rng(n: int) -> bytes:
    return bytes(range(n))


def test_issued_code_shape_entropy_and_stored_hash() -> None:
    code, record = issue_code(pepper=PEPPER, now=T0)
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4, 4]
    assert all(c in CODE_ALPHABET for c in "".join(groups))
    assert record.handle == groups[0]
    assert record.code_hash == hash_code(PEPPER, code)
    assert code.encode() not in repr(record).encode()
    assert record.expires_at == T0 + CODE_TTL
    others = {issue_code(pepper=PEPPER, now=T0)[0] for _ in range(200)}
    assert len(others) == 200  # 100 random bits: no collisions expected


def test_code_from_injected_rng_is_reproducible() -> None:
    a, _ = issue_code(pepper=PEPPER, now=T0, rng=counter_rng)
    b, _ = issue_code(pepper=PEPPER, now=T0, rng=counter_rng)
    assert a == b


def test_hash_depends_on_the_pepper() -> None:
    code, _ = issue_code(pepper=PEPPER, now=T0)
    assert hash_code(PEPPER, code) != hash_code(b"q" * 32, code)
    with pytest.raises(ValueError, match="pepper"):
        hash_code(b"short", code)


def test_code_normalisation_forgives_case_spaces_and_lookalikes() -> None:
    code, record = issue_code(pepper=PEPPER, now=T0, rng=counter_rng)
    sloppy = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert normalize_code(sloppy) == code.replace("-", "")
    assert attempt_code(record, sloppy, pepper=PEPPER, now=T0).ok


@pytest.mark.parametrize("bad", ["", "ABCD", "ABCD-EFGH-JKMN-PQRS-TVWU", "x" * 65, "ABCD-EFGH"])
def test_malformed_codes_are_refused_before_any_lookup(bad: str) -> None:
    with refused(E.CODE_MALFORMED):
        code_handle(bad)


def test_correct_code_redeems_once() -> None:
    code, record = issue_code(pepper=PEPPER, now=T0)
    first = attempt_code(record, code, pepper=PEPPER, now=T0 + timedelta(minutes=1))
    assert first.ok
    assert first.record.state is CodeState.REDEEMED
    again = attempt_code(first.record, code, pepper=PEPPER, now=T0 + timedelta(minutes=2))
    assert again.error is E.CODE_USED


def test_expired_code_is_refused_even_when_correct() -> None:
    code, record = issue_code(pepper=PEPPER, now=T0)
    result = attempt_code(record, code, pepper=PEPPER, now=T0 + CODE_TTL)
    assert result.error is E.CODE_EXPIRED
    assert result.record.state is CodeState.EXPIRED


def _wrong_secret(code: str) -> str:
    last = code[-1]
    return code[:-1] + ("0" if last != "0" else "1")


def test_wrong_secret_counts_and_locks_after_the_limit() -> None:
    code, record = issue_code(pepper=PEPPER, now=T0)
    wrong = _wrong_secret(code)
    for i in range(1, MAX_CODE_ATTEMPTS + 1):
        result = attempt_code(record, wrong, pepper=PEPPER, now=T0)
        assert result.error is E.CODE_INVALID
        record = result.record
        assert record.failed_attempts == i
    assert record.state is CodeState.LOCKED
    # Locked: even the right code is refused now.
    assert attempt_code(record, code, pepper=PEPPER, now=T0).error is E.CODE_LOCKED


def test_cancelled_code_is_refused() -> None:
    code, record = issue_code(pepper=PEPPER, now=T0)
    cancelled = cancel_code(record)
    assert attempt_code(cancelled, code, pepper=PEPPER, now=T0).error is E.CODE_CANCELLED
    redeemed = attempt_code(record, code, pepper=PEPPER, now=T0).record
    assert cancel_code(redeemed).state is CodeState.REDEEMED


def test_a_code_is_checked_only_against_its_own_record() -> None:
    _, record = issue_code(pepper=PEPPER, now=T0, rng=counter_rng)
    other, _ = issue_code(pepper=PEPPER, now=T0, rng=lambda n: bytes([0xFF] * n))
    assert code_handle(other) != record.handle
    with pytest.raises(ValueError, match="handle"):
        attempt_code(record, other, pepper=PEPPER, now=T0)


def test_code_record_cannot_be_built_invalid() -> None:
    with pytest.raises(ValueError, match="expires_at"):
        CodeRecord(handle="ABCD", code_hash=b"x" * 32, issued_at=T0, expires_at=T0)
    with pytest.raises(ValueError, match="handle"):
        CodeRecord(handle="abcd", code_hash=b"x" * 32, issued_at=T0, expires_at=T0 + CODE_TTL)


@given(st.text(max_size=80))
def test_any_presented_text_yields_a_result_or_code_malformed(text: str) -> None:
    code, record = issue_code(pepper=PEPPER, now=T0, rng=counter_rng)
    reason: EnrollmentReason | None
    handle: str | None
    try:
        handle = code_handle(text)
    except EnrollmentError as exc:
        reason = exc.reason
        handle = None
    else:
        reason = None
    if handle is None:
        assert reason is E.CODE_MALFORMED
    elif handle == record.handle:
        result = attempt_code(record, text, pepper=PEPPER, now=T0)
        assert result.ok == (normalize_code(text) == code.replace("-", ""))


# --------------------------------------------------------------------------- fixtures


class Pki:
    def __init__(self) -> None:
        self.root_key = crypto.generate_signing_key(crypto.COSE_ES256)
        self.root = build_root_ca(
            self.root_key,
            organization="H",
            common_name="Root",
            not_before=T0 - timedelta(days=1),
            not_after=T0 + timedelta(days=3650),
        )
        self.ca_key = crypto.generate_signing_key(crypto.COSE_ES256)
        self.ca = build_issuing_ca(
            self.ca_key.public_key(),
            role=CaRole.DEVICE,
            organization="H",
            common_name="Device CA",
            issuer_cert=self.root,
            issuer_key=self.root_key,
            not_before=T0 - timedelta(days=1),
            not_after=T0 + timedelta(days=1000),
        )

    def device(self, key: crypto.SigningKey, device_id: uuid.UUID) -> bytes:
        cert = build_leaf(
            key.public_key(),
            purpose=Purpose.DEVICE_CREDENTIAL,
            common_name=str(device_id),
            issuer_cert=self.ca,
            issuer_key=self.ca_key,
            not_before=T0 - timedelta(days=1),
            not_after=T0 + timedelta(days=365),
        )
        return certificate_pem(cert)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def ingest_key() -> IngestKey:
    public = crypto.x25519_public_raw(crypto.generate_hpke_key())
    return IngestKey(kid=ingest_key_id(public), public_key=public)


# --------------------------------------------------------------------------- request/response


def test_enrollment_request_round_trip() -> None:
    csr = build_device_csr(crypto.generate_signing_key())
    req = EnrollmentRequest(
        code="ABCD-EFGH-JKMN-PQRS-TVWX",
        csr_pem=csr,
        phd=PhdInfo(system_id="0011223344556677", model="BP7", serial="S1", manufacturer="M"),
    )
    data = req.to_json()
    assert set(json.loads(data)) == {"code", "csr_pem", "phd"}
    assert EnrollmentRequest.from_json(data) == req


def _request_obj() -> dict[str, object]:
    csr = build_device_csr(crypto.generate_signing_key())
    req = EnrollmentRequest(code="ABCD-EFGH-JKMN-PQRS-TVWX", csr_pem=csr, phd=PhdInfo())
    obj: dict[str, object] = json.loads(req.to_json())
    return obj


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda o: o.pop("code"), E.MALFORMED),
        (lambda o: o.update(extra=1), E.MALFORMED),
        (lambda o: o.update(code=5), E.MALFORMED),
        (lambda o: o.update(code="nope"), E.CODE_MALFORMED),
        (lambda o: o.update(csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n"), E.BAD_CSR),
        (lambda o: o.update(phd=[]), E.MALFORMED),
        (lambda o: o["phd"].update(model="x" * 65), E.MALFORMED),
        (lambda o: o["phd"].update(model="a\x00b"), E.MALFORMED),
        (lambda o: o["phd"].update(system_id="XYZ"), E.MALFORMED),
        (lambda o: o["phd"].pop("serial"), E.MALFORMED),
    ],
)
def test_enrollment_request_refusals(mutate: object, reason: EnrollmentReason) -> None:
    obj = _request_obj()
    mutate(obj)  # type: ignore[operator]
    with refused(reason):
        EnrollmentRequest.from_json(json.dumps(obj))


def test_enrollment_request_size_duplicates_and_non_json() -> None:
    with refused(E.TOO_LARGE):
        EnrollmentRequest.from_json(b" " * (16 * 1024 + 1))
    with refused(E.MALFORMED):
        EnrollmentRequest.from_json(b'{"code": "a", "code": "b", "csr_pem": "", "phd": {}}')
    with refused(E.MALFORMED):
        EnrollmentRequest.from_json(b"[1, 2]")
    with refused(E.MALFORMED):
        EnrollmentRequest.from_json(b"\xff\xfe")
    with refused(E.MALFORMED):
        EnrollmentRequest.from_json(b'{"code": NaN}')
    with refused(E.MALFORMED):
        EnrollmentRequest.from_json(b"[" * 100_00)


def test_errors_are_protocol_errors_without_values() -> None:
    obj = _request_obj()
    obj["phd"] = {"system_id": None, "model": "SECRET\x01", "serial": None,
                  "manufacturer": None, "firmware": None}  # fmt: skip
    with pytest.raises(PhdProtocolError) as info:
        EnrollmentRequest.from_json(json.dumps(obj))
    assert "SECRET" not in str(info.value)


def _response(pki: Pki) -> EnrollmentResponse:
    device_id = uuid.uuid4()
    cert = pki.device(crypto.generate_signing_key(), device_id)
    return EnrollmentResponse(
        device_id=device_id,
        certificate_pem=cert,
        chain_pem=cert + certificate_pem(pki.ca),
        root_pem=certificate_pem(pki.root),
        ingest_keys=(ingest_key(), ingest_key()),
    )


def test_enrollment_response_round_trip(pki: Pki) -> None:
    resp = _response(pki)
    data = resp.to_json()
    obj = json.loads(data)
    assert set(obj) == {"device_id", "certificate_pem", "chain_pem", "root_pem", "ingest_keys"}
    assert len(obj["ingest_keys"][0]["kid"]) == 32
    assert len(obj["ingest_keys"][0]["public_key"]) == 64
    back = EnrollmentResponse.from_json(data)
    assert back == resp
    assert str(back.device_id) in back.certificate.subject.rfc4514_string()


def test_response_with_a_kid_that_does_not_match_its_key_is_refused(pki: Pki) -> None:
    obj = json.loads(_response(pki).to_json())
    obj["ingest_keys"][0]["kid"] = "00" * 16
    with refused(E.MALFORMED):
        EnrollmentResponse.from_json(json.dumps(obj))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.update(ingest_keys=[]),
        lambda o: o.update(device_id="not-a-uuid"),
        lambda o: o.update(device_id=str(uuid.uuid4()).upper()),
        lambda o: o.update(certificate_pem="garbage"),
        lambda o: o.update(chain_pem=o["root_pem"]),  # chain does not start with the leaf
        lambda o: o["ingest_keys"][0].update(public_key="zz" * 32),
        lambda o: o["ingest_keys"].__setitem__(0, "x"),
    ],
)
def test_response_refusals(pki: Pki, mutate: object) -> None:
    obj = json.loads(_response(pki).to_json())
    mutate(obj)  # type: ignore[operator]
    with refused(E.MALFORMED):
        EnrollmentResponse.from_json(json.dumps(obj))


def test_ingest_key_id_is_stable_and_sized() -> None:
    public = bytes(range(32))
    assert ingest_key_id(public) == crypto.sha256(b"phd-ingest-kid-v1\x00" + public)[:16]
    with pytest.raises(ValueError, match="32 bytes"):
        ingest_key_id(b"short")


# --------------------------------------------------------------------------- renewal


@pytest.mark.parametrize("alg", [crypto.COSE_EDDSA, crypto.COSE_ES256])
def test_renewal_round_trip_and_verification(pki: Pki, alg: int) -> None:
    device_id = uuid.uuid4()
    current_key = crypto.generate_signing_key(alg)
    current = load_certificate(pki.device(current_key, device_id))
    new_key = crypto.generate_signing_key(alg)
    req = make_renewal_request(
        current_key=current_key, current_certificate=current, new_key=new_key, now=T0
    )
    back = RenewalRequest.from_json(req.to_json())
    assert back == req
    result = verify_renewal(back, current, now=T0 + timedelta(seconds=3), replay=ReplayWindow())
    assert result.device_id == device_id
    assert crypto.public_key_pem(result.new_public_key) == crypto.public_key_pem(
        new_key.public_key()
    )


def _renewal(pki: Pki) -> tuple[RenewalRequest, object, crypto.SigningKey]:
    device_id = uuid.uuid4()
    key = crypto.generate_signing_key()
    cert = load_certificate(pki.device(key, device_id))
    req = make_renewal_request(
        current_key=key, current_certificate=cert, new_key=crypto.generate_signing_key(), now=T0
    )
    return req, cert, key


def test_renewal_replay_is_refused(pki: Pki) -> None:
    req, cert, _ = _renewal(pki)
    window = ReplayWindow()
    verify_renewal(req, cert, now=T0, replay=window)  # type: ignore[arg-type]
    with refused(E.REPLAY):
        verify_renewal(req, cert, now=T0 + timedelta(seconds=1), replay=window)  # type: ignore[arg-type]


def test_renewal_outside_the_skew_is_refused(pki: Pki) -> None:
    req, cert, _ = _renewal(pki)
    with refused(E.CLOCK_SKEW):
        verify_renewal(req, cert, now=T0 + timedelta(minutes=6), replay=ReplayWindow())  # type: ignore[arg-type]


def test_renewal_signed_by_another_key_is_refused(pki: Pki) -> None:
    req, cert, _ = _renewal(pki)
    other = crypto.generate_signing_key()
    forged = RenewalRequest(
        device_id=req.device_id,
        cert_kid=req.cert_kid,
        csr_pem=req.csr_pem,
        ts=req.ts,
        nonce=req.nonce,
        signature=crypto.sign(other, req.signing_input()),
    )
    with refused(E.BAD_SIGNATURE):
        verify_renewal(forged, cert, now=T0, replay=ReplayWindow())  # type: ignore[arg-type]


def test_renewal_with_a_swapped_csr_is_refused(pki: Pki) -> None:
    # An attacker keeps the signature but swaps in a CSR for their own key.
    req, cert, _ = _renewal(pki)
    swapped = RenewalRequest(
        device_id=req.device_id,
        cert_kid=req.cert_kid,
        csr_pem=build_device_csr(crypto.generate_signing_key()),
        ts=req.ts,
        nonce=req.nonce,
        signature=req.signature,
    )
    with refused(E.BAD_SIGNATURE):
        verify_renewal(swapped, cert, now=T0, replay=ReplayWindow())  # type: ignore[arg-type]


def test_renewal_for_another_certificate_or_device_is_refused(pki: Pki) -> None:
    req, _, _ = _renewal(pki)
    other_cert = load_certificate(pki.device(crypto.generate_signing_key(), uuid.uuid4()))
    with refused(E.WRONG_CREDENTIAL):
        verify_renewal(req, other_cert, now=T0, replay=ReplayWindow())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda o: o.update(v=2), E.MALFORMED),
        (lambda o: o.update(v=True), E.MALFORMED),
        (lambda o: o.update(ts="1"), E.MALFORMED),
        (lambda o: o.update(ts=True), E.MALFORMED),
        (lambda o: o.update(nonce="00"), E.MALFORMED),
        (lambda o: o.update(signature="00" * 63), E.MALFORMED),
        (lambda o: o.pop("cert_kid"), E.MALFORMED),
        (lambda o: o.update(csr_pem="x"), E.BAD_CSR),
    ],
)
def test_renewal_message_refusals(pki: Pki, mutate: object, reason: EnrollmentReason) -> None:
    req, _, _ = _renewal(pki)
    obj = json.loads(req.to_json())
    mutate(obj)  # type: ignore[operator]
    with refused(reason):
        RenewalRequest.from_json(json.dumps(obj))


def test_replay_window_forgets_after_twice_the_skew() -> None:
    window = ReplayWindow(max_skew=timedelta(minutes=5))
    window.check_and_remember(b"n" * 16, now=T0)
    window.check_and_remember(b"n" * 16, now=T0 + timedelta(minutes=11))
    small = ReplayWindow(max_entries=1)
    small.check_and_remember(b"a" * 16, now=T0)
    with refused(E.REPLAY):
        small.check_and_remember(b"b" * 16, now=T0)


def test_chain_pem_helper_matches(pki: Pki) -> None:
    assert certificates_pem([pki.ca]) == certificate_pem(pki.ca)


# --------------------------------------------------------------------------- fuzzing

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = [
    *("code", "csr_pem", "phd", "device_id", "certificate_pem", "chain_pem", "root_pem"),
    *("ingest_keys", "v", "cert_kid", "ts", "nonce", "signature", "system_id", "model"),
]


@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=8).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_message_parsers_return_a_value_or_raise_enrollment_error(data: bytes) -> None:
    for parser in (
        EnrollmentRequest.from_json,
        EnrollmentResponse.from_json,
        RenewalRequest.from_json,
    ):
        # The invariant: a value or an EnrollmentError, never another exception type.
        with contextlib.suppress(EnrollmentError):
            parser(data)
