"""The pure write decision, the author rule, the fact cache's timing, and the
keyed record ids and idempotency fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr_common.errors import AccessDenied, ConfigError, InvalidArgument
from ehr_common.identity import Caller
from storage_service.authorization import (
    CLINICIAN_ROLES,
    EDGE_ROLE,
    FACT_ASSIGNMENT,
    FACT_CONSENT,
    WriteFacts,
    decide_write,
    facts_needed,
    may_read,
    resolve_author,
)
from storage_service.record_ids import RecordIdKeys
from storage_service.service import _FactCache

ORGS = ["Hosp1MSP", "Hosp2MSP"]
ROLES = ["device", "doctor", "nurse", "clinician", "record-writer", "auditor", "patient", "x"]
callers = st.builds(
    Caller,
    subject=st.sampled_from(["p-17", "ecg-7", "dr-a"]),
    msp_id=st.sampled_from(ORGS),
    roles=st.frozensets(st.sampled_from(ROLES), max_size=3),
)
patients = st.sampled_from(["Hosp1MSP/p-17", "Hosp2MSP/p-17", "Hosp1MSP/p-18"])
facts = st.builds(WriteFacts, device_assigned=st.booleans(), consented=st.booleans())


def allowed(caller: Caller, patient: str, f: WriteFacts) -> bool:
    try:
        decide_write(caller, patient, f)
        return True
    except AccessDenied:
        return False


@given(callers, patients, facts)
def test_write_decision_follows_the_stated_rules(
    caller: Caller, patient: str, f: WriteFacts
) -> None:
    same_org = caller.msp_id == patient.split("/")[0]
    expected = (
        caller.principal == patient
        or ("device" in caller.roles and f.device_assigned)
        or (bool(caller.roles & (CLINICIAN_ROLES | {"record-writer"})) and same_org)
        or (bool(caller.roles & CLINICIAN_ROLES) and f.consented)
    )
    assert allowed(caller, patient, f) == expected


@given(callers, patients, facts)
def test_facts_not_asked_for_do_not_change_the_decision(
    caller: Caller, patient: str, f: WriteFacts
) -> None:
    """Callers of decide_write may skip the lookups facts_needed does not name."""
    needed = facts_needed(caller, patient)
    trimmed = WriteFacts(
        device_assigned=f.device_assigned and FACT_ASSIGNMENT in needed,
        consented=f.consented and FACT_CONSENT in needed,
    )
    assert allowed(caller, patient, f) == allowed(caller, patient, trimmed)


@given(callers, patients)
def test_another_organisations_namesake_is_never_the_patient(caller: Caller, patient: str) -> None:
    namesake = Caller(patient.split("/")[1], "Hosp3MSP", caller.roles - {"device"})
    assert not allowed(namesake, patient, WriteFacts())
    assert not may_read(namesake, patient, consented=False)


@given(callers, patients, st.sampled_from(["Hosp1MSP/ecg-7", "Hosp2MSP/ecg-7"]), st.booleans())
def test_relayed_device_readings(caller: Caller, patient: str, device: str, assigned: bool) -> None:
    """An edge gateway relays only for devices of its own organisation, and only
    while the device is assigned to the patient; nothing else about the caller counts."""
    f = WriteFacts(device_assigned=assigned, consented=True)
    # the assignment is asked only of a caller it can matter for; for any other the
    # refusal stands whatever the ledger says
    relays = caller.principal == device or (
        EDGE_ROLE in caller.roles and caller.msp_id == device.split("/")[0]
    )
    assert facts_needed(caller, patient, device) == ({FACT_ASSIGNMENT} if relays else set())
    if not relays:
        assert not allowed_relay(caller, patient, f, device)
        assert not allowed_relay(caller, patient, WriteFacts(True, True), device)
    edge = Caller("gw-1", caller.msp_id, caller.roles | {EDGE_ROLE})
    expected = assigned and caller.msp_id == device.split("/")[0]
    assert allowed_relay(edge, patient, f, device) == expected
    itself = Caller(device.split("/")[1], device.split("/")[0], frozenset({"device"}))
    assert allowed_relay(itself, patient, f, device) == assigned
    plain = Caller("dr-a", caller.msp_id, caller.roles - {EDGE_ROLE})
    assert not allowed_relay(plain, patient, f, device) or plain.principal == device


def allowed_relay(caller: Caller, patient: str, f: WriteFacts, device: str) -> bool:
    try:
        decide_write(caller, patient, f, device=device)
        return True
    except AccessDenied:
        return False


def test_author_is_always_the_caller() -> None:
    c = Caller("ecg-7", "Hosp1MSP", frozenset({"device"}))
    assert {resolve_author(c, a) for a in ("", "ecg-7", "Hosp1MSP/ecg-7")} == {"Hosp1MSP/ecg-7"}
    for other in ("dr-heart", "Hosp2MSP/ecg-7", "Hosp1MSP/dr-heart"):
        with pytest.raises(AccessDenied):
            resolve_author(c, other)


def test_fact_cache_ttl_grace_and_expiry() -> None:
    now = [0.0]
    cache = _FactCache(ttl_s=5, grace_s=600, clock=lambda: now[0])
    key = ("assignment", "Hosp1MSP/p", "Hosp1MSP/d")
    cache.put(key, 3600)
    assert cache.fresh(key)
    now[0] = 5.0
    assert not cache.fresh(key) and cache.usable_offline(key)  # ask the ledger again
    now[0] = 600.0
    assert not cache.usable_offline(key)  # grace over
    cache.put(key, 2)  # the assignment itself ends in 2 s
    now[0] = 602.0
    assert not cache.fresh(key) and not cache.usable_offline(key)
    cache.put(key, 100)
    cache.drop(key)
    assert not cache.fresh(key)


def test_fact_cache_says_what_to_refresh_and_ignores_answers_that_raced_a_drop() -> None:
    now = [0.0]
    cache = _FactCache(ttl_s=4, grace_s=600, clock=lambda: now[0], keep_warm_s=10)
    used = ("assignment", "Hosp1MSP/p", "Hosp1MSP/d1")
    idle = ("assignment", "Hosp1MSP/p", "Hosp1MSP/d2")
    consent = ("consent", "Hosp1MSP/p", "Hosp2MSP/dr")
    for key in (used, idle, consent):
        cache.put(key, 3600)
    assert cache.fresh(used) and cache.fresh(consent)
    assert cache.due("assignment") == []  # fresh for 4 s more
    now[0] = 2.5
    assert cache.due("assignment") == [used]  # idle was never used: not refreshed
    mark = cache.drops()
    cache.drop(used)  # an unassignment on this service while the refresher asks
    cache.put(used, 3600, unless_dropped_since=mark)  # the stale answer arrives
    assert not cache.fresh(used)
    cache.put(used, 3600, unless_dropped_since=cache.drops())
    assert cache.fresh(used)
    now[0] = 12.0  # used 9.5 s ago: still kept warm
    assert cache.due("assignment") == [used]
    now[0] = 12.6  # not used for keep_warm_s: forgotten by the refresher
    assert cache.due("assignment") == []


KEYS = RecordIdKeys.from_secret(b"s" * 32)


@given(author=st.text(min_size=1, max_size=20), key=st.text(min_size=1, max_size=20))
def test_record_ids_reveal_neither_writer_nor_key(author: str, key: str) -> None:
    rid = KEYS.record_id(author, key)
    assert rid == KEYS.record_id(author, key)  # stable across retries
    assert rid != RecordIdKeys.from_secret(b"t" * 32).record_id(author, key)
    # not the old public derivation (SHA-256 of writer and key)
    old = hashlib.sha256(
        b"ehr-abe/idempotency/v1\x00" + author.encode() + b"\x00" + key.encode()
    ).digest()[:16]
    import base64

    assert rid != "r-" + base64.b32encode(old).decode().rstrip("=").lower()


def test_fingerprints_cover_the_whole_request() -> None:
    base = dict(patient_id="Hosp1MSP/p", record_type="ecg", envelope=None, payload=b"1", policy="a")
    fp = KEYS.fingerprint(**base)  # type: ignore[arg-type]
    assert fp == KEYS.fingerprint(**base)  # type: ignore[arg-type]
    for change in (
        {"patient_id": "Hosp2MSP/p"},
        {"record_type": "note"},
        {"payload": b"2"},
        {"policy": "b"},
        {"payload": None, "envelope": b"1"},
    ):
        assert KEYS.fingerprint(**{**base, **change}) != fp  # type: ignore[arg-type]
    assert b"1" not in fp and hashlib.sha256(b"1").digest() not in fp
    assert "s" * 32 not in repr(KEYS) and "record_id_key" not in repr(KEYS).split("(")[1]


def test_secret_and_key_limits() -> None:
    with pytest.raises(ConfigError):
        RecordIdKeys.from_secret(b"short")
    with pytest.raises(InvalidArgument):
        KEYS.record_id("a", "k" * 257)


def test_the_service_secret_lives_outside_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ehr_common.config import load_config
    from storage_service.wiring import storage_secret

    monkeypatch.delenv("EHR_ABE_STORAGE_SECRET", raising=False)
    monkeypatch.delenv("EHR_ABE_MASTER_PASSPHRASE", raising=False)
    cfg = load_config(env={})
    cfg.home = str(tmp_path)
    with pytest.raises(ConfigError, match="needs a secret"):
        storage_secret(cfg)
    inside = cfg.storage_dir / "secret.key"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"s" * 32)
    cfg.storage.secret_file = str(inside)
    with pytest.raises(ConfigError, match="inside the data directory"):
        storage_secret(cfg)
    outside = tmp_path / "secrets" / "storage.key"
    outside.parent.mkdir()
    outside.write_bytes(b"t" * 32)
    cfg.storage.secret_file = str(outside)
    from_file = storage_secret(cfg)
    assert from_file.endswith(b"t" * 32)
    cfg.storage.secret_file = ""
    monkeypatch.setenv("EHR_ABE_STORAGE_SECRET", "ab" * 32)
    assert storage_secret(cfg) != from_file
