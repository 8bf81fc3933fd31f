"""Who may write and read whose records: pure decisions, no I/O.

Every write path (PutRecord, and any streaming/group-commit path) must call
`decide_write` with the facts it needs from the ledger (`facts_needed` says
which), or `StorageCore.authorize_write`, which gathers them and caches them
briefly. Reads go through `may_read`.

The rules (README, "Security model"):
- the patient may write their own records;
- a device (role `device`) writes only for patients it is currently assigned
  to on the ledger (AssignDevice, made by a clinician or consent-admin of the
  patient's organisation, with an expiry);
- clinicians (`clinician`, `doctor`, `nurse`) and `record-writer`s write for
  patients of their own organisation;
- a clinician of another organisation writes only with the patient's consent
  (the same ledger consent that lets them read);
- a reading relayed for a device (`device=` given: an IoMT edge gateway
  forwarding what a device sent it) is written only if that device is
  currently assigned to the patient, and the caller is the device itself or
  an `edge-gateway` of the device's organisation;
- the author of a record is always the authenticated caller.
Reads: the patient, or a subject the patient's consent on the ledger allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ehr_common.errors import AccessDenied
from ehr_common.identity import Caller, split_principal

CLINICIAN_ROLES = frozenset({"clinician", "doctor", "nurse"})
#: write for patients of their own organisation
ORG_WRITER_ROLES = CLINICIAN_ROLES | {"record-writer"}
DEVICE_ROLE = "device"
#: an IoMT gateway that authenticates devices itself and relays their readings
EDGE_ROLE = "edge-gateway"

FACT_ASSIGNMENT = "assignment"
FACT_CONSENT = "consent"


@dataclass(frozen=True)
class WriteFacts:
    """What the ledger says about this caller and patient (only what was needed)."""

    device_assigned: bool = False  # the caller is a device currently assigned to the patient
    consented: bool = False  # the patient's consent currently allows the caller


def may_relay(caller: Caller, device: str) -> bool:
    """Whether `caller` may write the readings of `device` (qualified): the device
    itself, or an edge gateway of the device's organisation."""
    device_msp, _ = split_principal(device)
    return caller.principal == device or (EDGE_ROLE in caller.roles and caller.msp_id == device_msp)


def facts_needed(caller: Caller, patient: str, device: str | None = None) -> frozenset[str]:
    """Which ledger facts `decide_write` needs for this caller and (qualified) patient;
    empty when the decision needs none (the patient themself, or an own-organisation
    clinician, or a refusal that no fact can change). With `device`, the fact is that
    device's assignment, needed only when the caller may relay for the device."""
    msp, _ = split_principal(patient)
    if device is not None:
        # A caller who may not relay is refused whatever the ledger says: asking it
        # would let anyone with a certificate spend ledger queries (WriteSegments
        # confirms up to 256 devices in one).
        return frozenset({FACT_ASSIGNMENT}) if may_relay(caller, device) else frozenset()
    if caller.principal == patient or (caller.roles & ORG_WRITER_ROLES and caller.msp_id == msp):
        return frozenset()
    needed: set[str] = set()
    if DEVICE_ROLE in caller.roles:
        needed.add(FACT_ASSIGNMENT)
    if caller.roles & CLINICIAN_ROLES:
        needed.add(FACT_CONSENT)
    return frozenset(needed)


def decide_write(
    caller: Caller, patient: str, facts: WriteFacts, *, device: str | None = None
) -> None:
    """Allow (return) or refuse (AccessDenied) `caller` writing a record for `patient`
    (qualified ids). `device`: the qualified id of the device whose reading `caller`
    relays; `facts.device_assigned` is then about that device."""
    msp, _ = split_principal(patient)
    if device is not None:
        device_msp, _ = split_principal(device)
        if not may_relay(caller, device):
            raise AccessDenied(
                f"{caller.principal} may not write for device {device}: only the device "
                f"itself or an {EDGE_ROLE} gateway of {device_msp} may"
            )
        if not facts.device_assigned:
            raise AccessDenied(f"device {device} is not currently assigned to this patient")
        return
    if caller.principal == patient:
        return
    if DEVICE_ROLE in caller.roles and facts.device_assigned:
        return
    if caller.roles & ORG_WRITER_ROLES and caller.msp_id == msp:
        return
    if caller.roles & CLINICIAN_ROLES and facts.consented:
        return
    if DEVICE_ROLE in caller.roles:
        raise AccessDenied(
            f"{caller.principal} is not currently assigned to this patient: a device writes "
            "only for patients a clinician of their organisation assigned it to"
        )
    if caller.roles & CLINICIAN_ROLES:
        raise AccessDenied(
            f"{caller.principal} may not write for a patient of another organisation "
            "without the patient's consent"
        )
    raise AccessDenied(
        f"{caller.principal} may not write records for this patient: only the patient, an "
        "assigned device, or a clinician of the patient's organisation may"
    )


def resolve_author(caller: Caller, requested: str) -> str:
    """The record's author: always the caller. A request naming someone else is refused
    (rather than silently replaced, so a client that meant someone else learns it)."""
    if requested in ("", caller.subject, caller.principal):
        return caller.principal
    raise AccessDenied("the author of a record is the authenticated caller; leave author empty")


def may_read(caller: Caller, patient: str, consented: bool) -> bool:
    """May `caller` read `patient`'s records? `consented`: the ledger's answer."""
    return caller.principal == patient or consented
