"""Multi-authority commands: `authority setup --org`, `authority rotate|revoke|show|list`,
`key issue --org`, `key renew`, and the keyring side of encrypt/decrypt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ehr_common.config import Config
from ehr_common.errors import ConfigError, NotFound

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts fast
    from abe_service.ma.router import MaLedgerEncryptor
    from storage_service.ledger.base import Caller
    from storage_service.ledger.client import LedgerClient


def msp_of(org: str) -> str:
    """The Fabric MSP id of an organisation (hosp1 -> Hosp1MSP), as the network names it."""
    return org[:1].upper() + org[1:] + "MSP"


def _ledger(cfg: Config) -> LedgerClient:
    from storage_service.ledger.base import Caller
    from storage_service.ledger.client import LedgerClient
    from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT, build_ledger

    return LedgerClient(
        build_ledger(cfg), Caller(SERVICE_SUBJECT, cfg.storage.msp_id, SERVICE_ROLES)
    )


def _caller(org: str, msp: str | None) -> Caller:
    from storage_service.ledger.base import Caller

    return Caller(f"authority-{org}", msp or msp_of(org), frozenset({"authority"}))


def setup(
    cfg: Config,
    org: str,
    passphrase: bytes | None,
    key_file: Path | None,
    *,
    force: bool,
    register: bool,
    msp: str | None,
) -> str:
    """Create the authority's keys; register (or, with --force, rotate) them on the ledger."""
    from abe_service.ma.authority import MaAuthority
    from abe_service.ma.scheme import SCHEME_ID

    auth = MaAuthority.setup(
        cfg.ma_authority_dir(org), org, passphrase=passphrase, key_file=key_file, force=force
    )
    lines = [f"authority [bold]{org}[/] created in {cfg.ma_authority_dir(org)}"]
    if register:
        ledger = _ledger(cfg)
        caller = _caller(org, msp)
        try:
            ledger.get_authority(org)
            ledger.rotate_authority(caller, org, auth.public_key, auth.fingerprint)
            lines.append("its key is registered on the ledger (rotated: a new version)")
        except NotFound:
            ledger.register_authority(caller, org, SCHEME_ID, auth.public_key, auth.fingerprint)
            lines.append("its key is registered on the ledger")
        finally:
            ledger.close()
    lines.append(f"fingerprint {auth.fingerprint.hex()}")
    return "\n".join(lines)


def revoke(cfg: Config, org: str, reason: str, msp: str | None) -> str:
    ledger = _ledger(cfg)
    try:
        ledger.revoke_authority(_caller(org, msp), org, reason)
    finally:
        ledger.close()
    return f"authority {org}'s key is revoked on the ledger; `authority setup --org {org} --force` rotates it"


def show(cfg: Config, org: str | None) -> list[str]:
    ledger = _ledger(cfg)
    try:
        entries = [ledger.get_authority(org)] if org else ledger.list_authorities()
    finally:
        ledger.close()
    return [
        f"{e.authority_id:12} v{e.version} {'active ' if e.active else 'REVOKED'} "
        f"{e.owner_msp:10} {e.fingerprint.hex()[:16]}… {e.reason}"
        for e in entries
    ]


def issue(
    cfg: Config,
    org: str,
    gid: str,
    attributes: list[str] | None,
    passphrase: bytes | None,
    key_file: Path | None,
    *,
    valid_days: int,
    record: bool,
    msp: str | None,
) -> tuple[bytes, str]:
    """A time-bound key (or, with attributes None, a renewal of the time attributes);
    recorded on the ledger under the authority's organisation."""
    from abe_service.ma.authority import MaAuthority
    from abe_service.ma.validity import day_number

    if not 1 <= valid_days <= 3650:
        raise ConfigError("--valid-days must be 1 .. 3650")
    auth = MaAuthority.open(cfg.ma_authority_dir(org), passphrase=passphrase, key_file=key_file)
    today = day_number(datetime.now(UTC))
    if attributes is None:
        issued = auth.renew(gid, valid_from=today, valid_until=today + valid_days)
    else:
        issued = auth.issue_key(gid, attributes, valid_from=today, valid_until=today + valid_days)
    if record:
        ledger = _ledger(cfg)
        try:
            ledger.record_key_issue(
                _caller(org, msp),
                gid,
                issued.attribute_set_hmac,
                org,
                issued.key_id,
            )
        finally:
            ledger.close()
    return issued.user_key, issued.key_id


def encryptor_from_ledger(cfg: Config) -> MaLedgerEncryptor:
    """A multi-authority encryptor with the ledger's verified authority keys."""
    from abe_service.ma.router import LedgerAuthorities, MaLedgerEncryptor
    from abe_service.ma.scheme import MultiAuthority
    from abe_service.pairing.base import get_backend

    return MaLedgerEncryptor(LedgerAuthorities(_ledger(cfg), MultiAuthority.shared(get_backend())))
