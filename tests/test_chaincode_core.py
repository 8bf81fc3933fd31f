"""The ehr contract's pure core over a dict state: semantics and every refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaincode import core
from chaincode.core import DictState, Identity, TxContext, run_sync
from ehr_common.errors import AccessDenied, AlreadyExists, InvalidArgument, NotFound

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ROOT = "ab" * 32
ANCHORER = Identity("storage-service", "Hosp1MSP", frozenset({"anchorer", "auditor"}))
AUTHORITY = Identity("ka-1", "Hosp1MSP", frozenset({"authority"}))
AUDITOR = Identity("aud", "Hosp2MSP", frozenset({"auditor"}))
ADMIN = Identity("ca-admin", "Hosp2MSP", frozenset({"consent-admin"}))
PATIENT = Identity("p-17", "Hosp1MSP")
DOCTOR = Identity("dr-who", "Hosp2MSP", frozenset({"doctor"}))
ADMIN1 = Identity("ca-admin-1", "Hosp1MSP", frozenset({"consent-admin"}))
P17 = "Hosp1MSP/p-17"
WHO = "Hosp2MSP/dr-who"
NURSE = "Hosp1MSP/nurse-1"


class Chain:
    """A dict state and a clock: each call is one transaction."""

    def __init__(self) -> None:
        self.state = DictState()
        self.now = T0
        self.n = 0

    def call(self, caller: Identity, function: str, *args: str) -> Any:
        self.n += 1
        ctx = TxContext(f"tx{self.n:04d}", self.now)
        return json.loads(run_sync(core.invoke(self.state, caller, ctx, function, list(args))))


@pytest.fixture
def chain() -> Chain:
    return Chain()


def anchor(chain: Chain, batch: str, caller: Identity = ANCHORER) -> Any:
    return chain.call(caller, "AnchorBatch", batch, ROOT, "3", "4", '{"instance":"s1"}')


# -- anchors ------------------------------------------------------------------------------
def test_anchor_records_caller_and_tx_time(chain: Chain) -> None:
    a = anchor(chain, "b-1")
    assert a["merkle_root"] == ROOT and a["record_count"] == 3 and a["tree_size"] == 4
    assert a["by_msp"] == "Hosp1MSP" and a["by_subject"] == "storage-service"
    assert a["at"] == "2026-01-01T12:00:00.000000Z" and a["tx_id"] == "tx0001"
    assert a["metadata"] == {"instance": "s1"}
    assert chain.call(AUDITOR, "GetAnchor", "b-1") == a


def test_anchor_is_never_rewritten(chain: Chain) -> None:
    anchor(chain, "b-1")
    before = dict(chain.state.data)
    with pytest.raises(AlreadyExists, match="already anchored"):
        chain.call(ANCHORER, "AnchorBatch", "b-1", "cd" * 32, "1", "1", "{}")
    assert chain.state.data == before


def test_anchor_needs_anchorer_role(chain: Chain) -> None:
    with pytest.raises(AccessDenied, match="anchorer"):
        anchor(chain, "b-1", DOCTOR)
    assert chain.state.data == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["b/1", ROOT, "1", "1", "{}"], "batch_id"),
        (["", ROOT, "1", "1", "{}"], "batch_id"),
        (["b-1", "AB" * 32, "1", "1", "{}"], "hex"),
        (["b-1", "ab" * 31, "1", "1", "{}"], "32 bytes"),
        (["b-1", ROOT, "x", "1", "{}"], "record_count"),
        (["b-1", ROOT, "0", "1", "{}"], "record_count"),
        (["b-1", ROOT, "2", "1", "{}"], "exceed"),
        (["b-1", ROOT, "1", "1", "[1]"], "JSON object"),
        (["b-1", ROOT, "1", "1", "{"], "JSON object"),
        (["b-1", ROOT, "1", "1", json.dumps({"x": "y" * 5000})], "at most"),
    ],
)
def test_anchor_input_validation(chain: Chain, args: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        chain.call(ANCHORER, "AnchorBatch", *args)


def test_get_missing_anchor(chain: Chain) -> None:
    with pytest.raises(NotFound):
        chain.call(AUDITOR, "GetAnchor", "nope")


def test_unknown_function_and_arity(chain: Chain) -> None:
    with pytest.raises(InvalidArgument, match="no function"):
        chain.call(ANCHORER, "DropEverything")
    with pytest.raises(InvalidArgument, match="takes 1 arguments"):
        chain.call(ANCHORER, "GetAnchor")


def test_anonymous_caller_refused(chain: Chain) -> None:
    with pytest.raises(AccessDenied):
        chain.call(Identity("", "Hosp1MSP", frozenset({"anchorer"})), "GetAnchor", "b")


@settings(max_examples=25, deadline=None)
@given(
    ids=st.sets(st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}", fullmatch=True), min_size=0, max_size=30),
    page=st.integers(1, 7),
)
def test_list_anchors_pages_cover_everything_once(ids: set[str], page: int) -> None:
    chain = Chain()
    for i in ids:
        anchor(chain, i)
    seen: list[str] = []
    token = ""
    while True:
        out = chain.call(AUDITOR, "ListAnchors", "", "", str(page), token)
        assert len(out["anchors"]) <= page
        seen += [a["batch_id"] for a in out["anchors"]]
        token = out["next_page_token"]
        if not token:
            break
    assert seen == sorted(ids)


def test_list_anchors_by_id_range(chain: Chain) -> None:
    for i in range(10):
        anchor(chain, f"b-{i:03d}")
    out = chain.call(AUDITOR, "ListAnchors", "b-003", "b-006", "", "")
    assert [a["batch_id"] for a in out["anchors"]] == ["b-003", "b-004", "b-005"]
    assert out["next_page_token"] == ""
    with pytest.raises(InvalidArgument, match="page_size"):
        chain.call(AUDITOR, "ListAnchors", "", "", "5000", "")
    with pytest.raises(InvalidArgument, match="page_token"):
        chain.call(AUDITOR, "ListAnchors", "", "", "2", "consent/x/")


# -- key issuance -------------------------------------------------------------------------
def test_key_issue_recorded_and_queried(chain: Chain) -> None:
    h = "11" * 32
    chain.call(AUTHORITY, "RecordKeyIssue", "dr-who", h, "ka-1", "k-1")
    chain.now += timedelta(seconds=1)
    chain.call(AUTHORITY, "RecordKeyIssue", "dr-who", "22" * 32, "ka-1", "k-2")
    chain.call(AUTHORITY, "RecordKeyIssue", "nurse-1", h, "ka-1", "k-3")
    mine = chain.call(DOCTOR, "KeyIssuesBySubject", "dr-who", "", "")
    assert [k["key_id"] for k in mine["key_issues"]] == ["k-1", "k-2"]
    assert mine["key_issues"][0]["attributes_hash"] == h
    assert mine["key_issues"][0]["by_subject"] == "ka-1"
    other = chain.call(AUDITOR, "KeyIssuesBySubject", "nurse-1", "", "")
    assert [k["key_id"] for k in other["key_issues"]] == ["k-3"]


def test_key_issue_refusals(chain: Chain) -> None:
    with pytest.raises(AccessDenied, match="authority"):
        chain.call(DOCTOR, "RecordKeyIssue", "dr-who", "11" * 32, "ka-1", "k-1")
    chain.call(AUTHORITY, "RecordKeyIssue", "dr-who", "11" * 32, "ka-1", "k-1")
    with pytest.raises(AlreadyExists):
        chain.call(AUTHORITY, "RecordKeyIssue", "nurse", "11" * 32, "ka-1", "k-1")
    with pytest.raises(InvalidArgument, match="attributes_hash"):
        chain.call(AUTHORITY, "RecordKeyIssue", "dr-who", "11", "ka-1", "k-9")
    with pytest.raises(AccessDenied):
        chain.call(PATIENT, "KeyIssuesBySubject", "dr-who", "", "")


# -- consent ------------------------------------------------------------------------------
def allows(chain: Chain, at: datetime | None = None, who: Identity = ANCHORER) -> bool:
    when = core.format_time(at) if at else ""
    out = chain.call(who, "ConsentAllows", P17, WHO, when)
    return bool(out["allowed"])


def test_consent_lifecycle(chain: Chain) -> None:
    assert not allows(chain)
    chain.call(PATIENT, "GrantConsent", P17, WHO, "")
    assert allows(chain) and allows(chain, T0 + timedelta(days=3650))
    chain.now += timedelta(minutes=1)
    chain.call(PATIENT, "RevokeConsent", P17, WHO)
    assert not allows(chain)
    chain.now += timedelta(minutes=1)
    expiry = T0 + timedelta(hours=1)
    chain.call(ADMIN1, "GrantConsent", P17, WHO, expiry.isoformat())
    assert allows(chain, expiry - timedelta(microseconds=1))
    assert not allows(chain, expiry)
    hist = chain.call(PATIENT, "ConsentHistory", P17, WHO, "", "")["changes"]
    assert [c["action"] for c in hist] == ["grant", "revoke", "grant"]
    assert [c["by_subject"] for c in hist] == ["p-17", "p-17", "ca-admin-1"]
    current = chain.call(DOCTOR, "GetConsent", P17, WHO)
    assert current["expires_at"] == core.format_time(expiry)


def test_consent_change_by_someone_else_is_refused(chain: Chain) -> None:
    # the same subject in another organisation, and another organisation's consent-admin,
    # are not the patient
    impostors = (Identity("p-17", "Hosp2MSP", frozenset({"patient"})), ADMIN)
    for who in (DOCTOR, ANCHORER, AUTHORITY, Identity("p-18", "Hosp1MSP"), *impostors):
        with pytest.raises(AccessDenied, match="only the patient"):
            chain.call(who, "GrantConsent", P17, WHO, "")
        with pytest.raises(AccessDenied, match="only the patient"):
            chain.call(who, "RevokeConsent", P17, WHO)
    assert chain.state.data == {}


def test_consent_reads_are_restricted(chain: Chain) -> None:
    stranger = Identity("nosy", "Hosp2MSP", frozenset({"doctor"}))
    with pytest.raises(AccessDenied):
        allows(chain, who=stranger)
    with pytest.raises(AccessDenied):
        chain.call(stranger, "ConsentHistory", P17, "", "", "")
    assert not allows(chain, who=DOCTOR)  # the subject may ask about itself
    assert not allows(chain, who=PATIENT)
    with pytest.raises(NotFound):
        chain.call(PATIENT, "GetConsent", P17, WHO)


def test_consent_validation(chain: Chain) -> None:
    with pytest.raises(InvalidArgument, match="past"):
        chain.call(PATIENT, "GrantConsent", P17, WHO, "2020-01-01T00:00:00Z")
    with pytest.raises(InvalidArgument, match="offset"):
        chain.call(PATIENT, "GrantConsent", P17, WHO, "2030-01-01T00:00:00")
    with pytest.raises(InvalidArgument, match="ISO"):
        chain.call(PATIENT, "GrantConsent", P17, WHO, "tomorrow")
    with pytest.raises(InvalidArgument, match="subject_id"):
        chain.call(PATIENT, "GrantConsent", P17, "Hosp2MSP/dr/who", "")
    with pytest.raises(InvalidArgument, match="organisation-qualified"):
        chain.call(PATIENT, "GrantConsent", P17, "dr-who", "")  # a bare subject
    with pytest.raises(InvalidArgument, match="organisation-qualified"):
        chain.call(PATIENT, "GrantConsent", "p-17", WHO, "")


@settings(max_examples=50, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 100), st.one_of(st.none(), st.integers(1, 100))),
        min_size=1,
        max_size=8,
    ),
    probe=st.integers(0, 400),
)
def test_consent_matches_a_simple_model(
    ops: list[tuple[bool, int, int | None]], probe: int
) -> None:
    """The current consent answers like the last change, with its expiry."""
    chain = Chain()
    last: tuple[bool, datetime | None] = (False, None)
    for grant, gap, ttl in ops:
        chain.now += timedelta(seconds=gap + 1)
        if grant:
            expiry = chain.now + timedelta(seconds=ttl) if ttl else None
            arg = expiry.isoformat() if expiry else ""
            chain.call(PATIENT, "GrantConsent", P17, WHO, arg)
            last = (True, expiry)
        else:
            chain.call(PATIENT, "RevokeConsent", P17, WHO)
            last = (False, None)
    at = chain.now + timedelta(seconds=probe)
    granted, expiry = last
    expected = granted and (expiry is None or at < expiry)
    assert allows(chain, at) == expected
    hist = chain.call(AUDITOR, "ConsentHistory", P17, WHO, "3", "")
    assert len(hist["changes"]) == min(3, len(ops))


# -- audit --------------------------------------------------------------------------------
def events(*triples: tuple[str, str, str]) -> str:
    at = core.format_time(T0)
    return json.dumps(
        [{"record_id": r, "patient_id": p, "subject_id": s, "at": at} for r, p, s in triples]
    )


def test_access_log_by_record_and_subject(chain: Chain) -> None:
    out = chain.call(ANCHORER, "LogAccesses", events(("r1", P17, WHO), ("r2", P17, WHO)))
    assert out["logged"] == 2
    chain.call(ANCHORER, "LogAccess", "r1", P17, NURSE, core.format_time(T0))
    by_record = chain.call(AUDITOR, "AccessLogByRecord", "r1", "", "")["events"]
    assert sorted(e["subject_id"] for e in by_record) == sorted([WHO, NURSE])
    mine = chain.call(DOCTOR, "AccessLogBySubject", WHO, "", "")["events"]
    assert sorted(e["record_id"] for e in mine) == ["r1", "r2"]
    assert all(e["kind"] == "access" for e in mine)


def test_access_log_refusals(chain: Chain) -> None:
    with pytest.raises(AccessDenied, match="anchorer"):
        chain.call(DOCTOR, "LogAccesses", events(("r1", P17, WHO)))
    with pytest.raises(AccessDenied):
        chain.call(DOCTOR, "AccessLogByRecord", "r1", "", "")
    with pytest.raises(AccessDenied):
        chain.call(DOCTOR, "AccessLogBySubject", NURSE, "", "")
    for bad, msg in [
        ("[]", "non-empty"),
        ("{}", "non-empty"),
        ("[1]", "JSON object"),
        ('[{"record_id":"r"}]', "lacks"),
        ("nope", "JSON list"),
    ]:
        with pytest.raises(InvalidArgument, match=msg):
            chain.call(ANCHORER, "LogAccesses", bad)
    assert chain.state.data == {}


def test_integrity_failures(chain: Chain) -> None:
    chain.call(ANCHORER, "LogIntegrityFailure", "r1", "b-1", "hash mismatch")
    chain.call(AUDITOR, "LogIntegrityFailure", "r1", "", "found by VerifyRecords")
    out = chain.call(AUDITOR, "IntegrityFailuresByRecord", "r1", "", "")["failures"]
    assert [f["detail"] for f in out] == ["hash mismatch", "found by VerifyRecords"]
    with pytest.raises(AccessDenied):
        chain.call(DOCTOR, "LogIntegrityFailure", "r1", "b-1", "x")
    with pytest.raises(InvalidArgument, match="detail"):
        chain.call(ANCHORER, "LogIntegrityFailure", "r1", "b-1", "x" * 2000)


# -- wire errors --------------------------------------------------------------------------
def test_wire_errors_round_trip() -> None:
    msg = core.wire_error(AlreadyExists("batch b is already anchored"))
    wrapped = f"chaincode response 500, {msg}"
    assert core.parse_wire_error(wrapped) == ("ALREADY_EXISTS", "batch b is already anchored")
    assert core.wire_error(ValueError("secret detail")) == "[ehr:INTERNAL] the ehr contract failed"
    assert core.parse_wire_error("plain peer error") is None


# -- device assignments ---------------------------------------------------------------------
DEVICE = "Hosp1MSP/ecg-7"
NURSE1 = Identity("nurse-1", "Hosp1MSP", frozenset({"nurse"}))


def assigned(chain: Chain, at: datetime | None = None, who: Identity = ANCHORER) -> Any:
    when = core.format_time(at) if at else ""
    return chain.call(who, "AssignmentAllows", P17, DEVICE, when)


def test_device_assignment_lifecycle(chain: Chain) -> None:
    assert not assigned(chain)["allowed"]
    until = T0 + timedelta(hours=8)
    chain.call(NURSE1, "AssignDevice", P17, DEVICE, until.isoformat())
    out = assigned(chain)
    assert out["allowed"] and out["expires_at"] == core.format_time(until)
    assert not assigned(chain, until)["allowed"]  # expiry is exclusive
    chain.now += timedelta(minutes=5)
    chain.call(ADMIN1, "UnassignDevice", P17, DEVICE)
    assert not assigned(chain)["allowed"]
    hist = chain.call(PATIENT, "AssignmentHistory", P17, "", "", "")["changes"]
    assert [(c["action"], c["by_subject"]) for c in hist] == [
        ("assign", "nurse-1"),
        ("unassign", "ca-admin-1"),
    ]
    # the device itself may ask; a stranger may not
    assert not assigned(chain, who=Identity("ecg-7", "Hosp1MSP", frozenset({"device"})))["allowed"]
    with pytest.raises(AccessDenied):
        assigned(chain, who=Identity("ecg-8", "Hosp1MSP", frozenset({"device"})))


def test_assignments_allow_answers_many_pairs_in_order(chain: Chain) -> None:
    until = T0 + timedelta(hours=8)
    chain.call(NURSE1, "AssignDevice", P17, DEVICE, until.isoformat())
    other = "Hosp1MSP/spo2-1"
    pairs = json.dumps([[P17, other], [P17, DEVICE]])
    out = chain.call(ANCHORER, "AssignmentsAllow", pairs, "")
    assert [(r["device_id"], r["allowed"], r["expires_at"]) for r in out["results"]] == [
        (other, False, ""),
        (DEVICE, True, core.format_time(until)),
    ]
    later = core.format_time(until)
    assert not chain.call(ANCHORER, "AssignmentsAllow", pairs, later)["results"][1]["allowed"]
    # each pair is checked as AssignmentAllows checks it: a device asks only for itself
    device = Identity("ecg-7", "Hosp1MSP", frozenset({"device"}))
    with pytest.raises(AccessDenied):
        chain.call(device, "AssignmentsAllow", pairs, "")
    for bad in (
        "not json",
        "[]",
        "{}",
        json.dumps([[P17]]),
        json.dumps([[P17, 7]]),
        json.dumps([[P17, "unqualified"]]),
        json.dumps([[P17, DEVICE]] * (core.MAX_ASSIGNMENT_QUERY + 1)),
    ):
        with pytest.raises(InvalidArgument):
            chain.call(ANCHORER, "AssignmentsAllow", bad, "")


def test_only_the_patients_organisation_assigns_devices(chain: Chain) -> None:
    until = (T0 + timedelta(hours=1)).isoformat()
    for who in (
        DOCTOR,  # a clinician of another organisation
        ADMIN,  # a consent-admin of another organisation
        Identity("ecg-7", "Hosp1MSP", frozenset({"device"})),  # the device itself
        PATIENT,
        ANCHORER,
    ):
        with pytest.raises(AccessDenied, match="may not assign"):
            chain.call(who, "AssignDevice", P17, DEVICE, until)
        with pytest.raises(AccessDenied, match="may not assign"):
            chain.call(who, "UnassignDevice", P17, DEVICE)
    assert chain.state.data == {}


def test_assignment_validation(chain: Chain) -> None:
    for expiry, msg in [
        ("", "needs an expiry"),
        ((T0 - timedelta(seconds=1)).isoformat(), "past"),
        ((T0 + timedelta(days=400)).isoformat(), "at most"),
    ]:
        with pytest.raises(InvalidArgument, match=msg):
            chain.call(NURSE1, "AssignDevice", P17, DEVICE, expiry)
    with pytest.raises(InvalidArgument, match="organisation-qualified"):
        chain.call(NURSE1, "AssignDevice", P17, "ecg-7", (T0 + timedelta(hours=1)).isoformat())
    assert chain.state.data == {}


# -- adversarial: who may change consent and assignments -----------------------------------
_ORGS = st.sampled_from(["Hosp1MSP", "Hosp2MSP"])
_SUBJECTS = st.sampled_from(["p-17", "p-18", "dr-who", "ecg-7"])
_ROLES = st.frozensets(
    st.sampled_from(["consent-admin", "doctor", "nurse", "device", "anchorer", "auditor", "x"]),
    max_size=3,
)
_IDS = st.builds(lambda m, s: f"{m}/{s}", _ORGS, _SUBJECTS)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["GrantConsent", "RevokeConsent", "AssignDevice", "UnassignDevice"]),
            st.builds(Identity, _SUBJECTS, _ORGS, _ROLES),
            _IDS,
            _IDS,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_only_the_patient_or_its_own_organisation_changes_its_consent_and_devices(
    ops: list[tuple[str, Identity, str, str]],
) -> None:
    chain = Chain()
    for function, who, patient, other in ops:
        chain.now += timedelta(seconds=1)
        args = [patient, other]
        if function in ("GrantConsent", "AssignDevice"):
            args.append((chain.now + timedelta(hours=1)).isoformat())
        p_msp = patient.split("/")[0]
        if function.endswith("Consent"):
            may = who.principal == patient or ("consent-admin" in who.roles and who.msp_id == p_msp)
        else:
            may = who.msp_id == p_msp and bool(
                who.roles & {"consent-admin", "doctor", "nurse", "clinician"}
            )
        before = dict(chain.state.data)
        try:
            chain.call(who, function, *args)
            assert may, (function, who, patient)
        except AccessDenied:
            assert not may, (function, who, patient)
            assert chain.state.data == before  # a refusal writes nothing


# -- anchors by storage instance (what the ledger says is anchored) ----------------------------
OTHER_ORG_ANCHORER = Identity("storage-service", "Hosp2MSP", frozenset({"anchorer"}))


def anchor_range(
    chain: Chain, batch: str, first: int, last: int, caller: Identity = ANCHORER, inst: str = "s1"
) -> Any:
    return chain.call(caller, "AnchorRecords", batch, ROOT, inst, str(first), str(last), "{}")


def test_anchor_records_states_what_it_covers(chain: Chain) -> None:
    a = anchor_range(chain, "s1-1", 1, 4)
    assert (a["instance"], a["first_seq"], a["last_seq"], a["tree_size"]) == ("s1", 1, 4, 4)
    assert chain.call(AUDITOR, "GetAnchor", "s1-1") == a
    anchor_range(chain, "s1-2", 7, 7)  # a gap (a batch set aside) is allowed
    listed = chain.call(AUDITOR, "AnchorsByInstance", "s1", "0", "", "")["anchors"]
    assert [x["batch_id"] for x in listed] == ["s1-1", "s1-2"]
    after = chain.call(AUDITOR, "AnchorsByInstance", "s1", "1", "", "")["anchors"]
    assert [x["batch_id"] for x in after] == ["s1-2"]
    assert chain.call(AUDITOR, "AnchorsByInstance", "s2", "0", "", "")["anchors"] == []


@pytest.mark.parametrize(("first", "last"), [(1, 1), (3, 9), (4, 5), (2, 3)])
def test_anchor_ranges_never_overlap_or_go_back(chain: Chain, first: int, last: int) -> None:
    anchor_range(chain, "s1-1", 1, 4)
    with pytest.raises(AlreadyExists, match="overlap"):
        anchor_range(chain, "s1-x", first, last)


def test_anchor_instance_belongs_to_its_first_organisation(chain: Chain) -> None:
    anchor_range(chain, "s1-1", 1, 2)
    with pytest.raises(AccessDenied, match="belongs to Hosp1MSP"):
        anchor_range(chain, "s1-2", 3, 4, caller=OTHER_ORG_ANCHORER)
    with pytest.raises(AccessDenied):
        anchor_range(chain, "s1-3", 3, 4, caller=AUDITOR)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["b", ROOT, "s1", "0", "1", "{}"], "first_seq"),
        (["b", ROOT, "s1", "5", "4", "{}"], "before"),
        (["b", ROOT, "s/1", "1", "1", "{}"], "instance"),
        (["b", "zz", "s1", "1", "1", "{}"], "merkle_root"),
        (["b", ROOT, "s1", "1", str(2_000_000), "{}"], "at most"),
        (["b", ROOT, "s1", "x", "1", "{}"], "first_seq"),
    ],
)
def test_anchor_records_validation(chain: Chain, args: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        chain.call(ANCHORER, "AnchorRecords", *args)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=30), st.integers(1, 7))
@settings(max_examples=40, deadline=None)
def test_anchors_by_instance_pages_cover_everything_once(sizes: list[int], page: int) -> None:
    chain = Chain()
    first = 1
    for i, n in enumerate(sizes):
        anchor_range(chain, f"s1-{i}", first, first + n - 1)
        first += n + (i % 2)  # some gaps
    seen: list[int] = []
    token = ""
    while True:
        out = chain.call(AUDITOR, "AnchorsByInstance", "s1", "0", str(page), token)
        seen += [a["first_seq"] for a in out["anchors"]]
        token = out["next_page_token"]
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(sizes)


def test_access_events_with_ids_are_logged_once(chain: Chain) -> None:
    event = {
        "record_id": "r-1",
        "patient_id": "Hosp1MSP/p-17",
        "subject_id": "Hosp2MSP/dr-who",
        "at": "2026-01-01T11:00:00Z",
    }
    twice = json.dumps([{**event, "event_id": "a-1"}, {**event, "event_id": "a-1"}])
    assert chain.call(ANCHORER, "LogAccesses", twice)["logged"] == 1
    again = json.dumps([{**event, "event_id": "a-1"}, {**event, "event_id": "a-2"}])
    assert chain.call(ANCHORER, "LogAccesses", again)["logged"] == 1
    events = chain.call(AUDITOR, "AccessLogByRecord", "r-1", "", "")["events"]
    assert sorted(e["event_id"] for e in events) == ["a-1", "a-2"]
    with pytest.raises(InvalidArgument, match="event_id"):
        chain.call(ANCHORER, "LogAccesses", json.dumps([{**event, "event_id": "bad/id"}]))


# -- multi-authority registry ---------------------------------------------------------------
HOSP2_KA = Identity("ka-2", "Hosp2MSP", frozenset({"authority"}))


def _key(text: str) -> tuple[str, str]:
    import hashlib

    key = text.encode().hex()
    return key, hashlib.sha256(core.AUTHORITY_KEY_DOMAIN + text.encode()).hexdigest()


def test_authority_ids_belong_to_their_organisation(chain: Chain) -> None:
    assert core.authority_of_msp("Hosp1MSP") == "hosp1"
    assert core.authority_of_msp("msp") == "msp"
    key, fp = _key("k1")
    # hosp2's authority cannot register (squat) hosp1, nor a plain member register its own
    with pytest.raises(AccessDenied, match="own organisation"):
        chain.call(HOSP2_KA, "RegisterAuthority", "hosp1", "ma-rw15-bls12381-v1", key, fp)
    with pytest.raises(AccessDenied):
        chain.call(PATIENT, "RegisterAuthority", "hosp1", "ma-rw15-bls12381-v1", key, fp)
    entry = chain.call(AUTHORITY, "RegisterAuthority", "hosp1", "ma-rw15-bls12381-v1", key, fp)
    assert entry["version"] == 1 and entry["owner_msp"] == "Hosp1MSP"
    for bad in ("Hosp1", "hosp1/x", "", "a" * 65):
        with pytest.raises((InvalidArgument, AccessDenied)):
            chain.call(AUTHORITY, "RegisterAuthority", bad, "ma-rw15-bls12381-v1", key, fp)
    with pytest.raises(InvalidArgument, match="scheme"):
        chain.call(HOSP2_KA, "RegisterAuthority", "hosp2", "fame", key, fp)
    with pytest.raises(InvalidArgument, match="fingerprint"):
        chain.call(HOSP2_KA, "RegisterAuthority", "hosp2", "ma-rw15-bls12381-v1", key, "00" * 32)
    with pytest.raises(NotFound):
        chain.call(AUDITOR, "GetAuthority", "hosp2")


def test_authority_rotation_history_and_revocation(chain: Chain) -> None:
    k1, f1 = _key("k1")
    k2, f2 = _key("k2")
    chain.call(AUTHORITY, "RegisterAuthority", "hosp1", "ma-rw15-bls12381-v1", k1, f1)
    chain.now += timedelta(days=1)
    rev = chain.call(AUTHORITY, "RevokeAuthority", "hosp1", "lost laptop")
    assert rev["status"] == "revoked" and rev["fingerprint"] == f1
    with pytest.raises(AlreadyExists):
        chain.call(AUTHORITY, "RevokeAuthority", "hosp1", "again")
    with pytest.raises(AlreadyExists, match="new key"):
        chain.call(AUTHORITY, "RotateAuthority", "hosp1", k1, f1)
    rot = chain.call(AUTHORITY, "RotateAuthority", "hosp1", k2, f2)
    assert rot["version"] == 2 and rot["status"] == "active"
    hist = chain.call(AUDITOR, "AuthorityHistory", "hosp1", "", "")
    assert [v["fingerprint"] for v in hist["versions"]] == [f1, f2]
    listed = chain.call(AUDITOR, "ListAuthorities", "", "")["authorities"]
    assert [a["authority_id"] for a in listed] == ["hosp1"]
    with pytest.raises(AccessDenied):
        chain.call(HOSP2_KA, "RotateAuthority", "hosp1", *_key("k3"))


def test_key_issues_by_authority(chain: Chain) -> None:
    k1, f1 = _key("k1")
    chain.call(AUTHORITY, "RegisterAuthority", "hosp1", "ma-rw15-bls12381-v1", k1, f1)
    chain.call(AUTHORITY, "RecordKeyIssue", "alice", "01" * 32, "hosp1", "k-a")
    with pytest.raises(AccessDenied, match="own organisation"):
        chain.call(HOSP2_KA, "RecordKeyIssue", "alice", "01" * 32, "hosp1", "k-b")
    chain.call(HOSP2_KA, "RecordKeyIssue", "bob", "01" * 32, "a-fame-authority", "k-c")
    got = chain.call(AUDITOR, "KeyIssuesByAuthority", "hosp1", "", "")["key_issues"]
    assert [k["key_id"] for k in got] == ["k-a"]
    with pytest.raises(AccessDenied):
        chain.call(PATIENT, "KeyIssuesByAuthority", "hosp1", "", "")
