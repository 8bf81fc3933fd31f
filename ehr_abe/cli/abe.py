"""`ehr-abe authority`, `ehr-abe key`, `ehr-abe encrypt`, `ehr-abe decrypt`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ehr_abe.cli.common import ConfigOption, HomeOption, config_from, console, read_passphrase
from ehr_common.config import Config
from ehr_common.errors import ConfigError
from ehr_common.files import PUBLIC_MODE, SECRET_MODE, write_file_atomic

authority_app = typer.Typer(
    help="Set up and inspect the CP-ABE key authority.", no_args_is_help=True
)
key_app = typer.Typer(help="Issue user keys (needs the master key).", no_args_is_help=True)

OrgOption = Annotated[
    str | None,
    typer.Option("--org", help="Multi-authority: the organisation (authority id), e.g. hosp1."),
]
MspOption = Annotated[
    str | None, typer.Option("--msp", help="Its Fabric MSP id (default: hosp1 -> Hosp1MSP).")
]
ValidDaysOption = Annotated[
    int | None,
    typer.Option(
        "--valid-days",
        help="Days of validity from today: the key opens records written from today through "
        "today + N (UTC days, both included) (multi-authority keys: default 365; FAME keys: "
        "adds valid_from/valid_until only when given).",
    ),
]
RecordOption = Annotated[
    bool, typer.Option(help="Record the key issue on the ledger (multi-authority).")
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Seal the master key with this file's bytes (≥32) instead of a passphrase.",
    ),
]


def _master_secret(
    cfg: Config, key_file: Path | None, *, confirm: bool
) -> tuple[bytes | None, Path | None]:
    """(passphrase, key file) for the master key: the --key-file option, else the
    configured key file, else the passphrase from its variable or a prompt."""
    key_file = key_file or (Path(cfg.authority.key_file) if cfg.authority.key_file else None)
    if key_file is not None:
        return None, key_file
    return read_passphrase(cfg.authority.passphrase_env, prompt=True, confirm=confirm), None


def _read_input(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _write_output(path: Path, data: bytes, *, secret: bool, force: bool) -> None:
    """stdout for `-`; else a temporary file renamed into place (ehr_common.files):
    0600 for keys and plaintext whatever the old file's mode, symlinks refused,
    an existing file replaced only with --force."""
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    write_file_atomic(path, data, SECRET_MODE if secret else PUBLIC_MODE, overwrite=force)


ForceOption = Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")]


@authority_app.command("setup")
def authority_setup(
    config: ConfigOption = None,
    home: HomeOption = None,
    key_file: KeyFileOption = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing authority (invalidates all keys).")
    ] = False,
    org: OrgOption = None,
    register: Annotated[
        bool, typer.Option(help="With --org: register (or rotate) the key on the ledger.")
    ] = True,
    msp: MspOption = None,
) -> None:
    """Create public parameters and a master key sealed at rest (0600). With --org, a
    multi-authority authority for that organisation (its key goes on the ledger)."""
    from abe_service.authority import KeyAuthority

    cfg = config_from(config, home)
    passphrase, key_file = _master_secret(cfg, key_file, confirm=True)
    if org is not None:
        from ehr_abe.cli import ma

        console.print(
            ma.setup(cfg, org, passphrase, key_file, force=force, register=register, msp=msp)
        )
        return
    auth = KeyAuthority.setup(
        cfg.authority_dir, passphrase=passphrase, key_file=key_file, force=force
    )
    console.print(f"key authority [bold]{auth.authority_id}[/] created in {cfg.authority_dir}")


@authority_app.command("info")
def authority_info(config: ConfigOption = None, home: HomeOption = None) -> None:
    """Show the authority's id, scheme and files."""
    from abe_service.authority import KeyAuthority
    from abe_service.fame import SCHEME_ID

    cfg = config_from(config, home)
    auth = KeyAuthority.open(cfg.authority_dir, public_only=True)
    console.print(
        f"authority id  {auth.authority_id}\nscheme        {SCHEME_ID}\ndirectory     {cfg.authority_dir}"
    )


@authority_app.command("export-params")
def export_params(
    out: Annotated[Path, typer.Argument(help="Output file, or - for stdout.")],
    config: ConfigOption = None,
    home: HomeOption = None,
    force: ForceOption = False,
) -> None:
    """Write the public parameters (what encryptors need)."""
    from abe_service.authority import KeyAuthority

    cfg = config_from(config, home)
    params = KeyAuthority.open(cfg.authority_dir, public_only=True).public_params
    _write_output(out, params, secret=False, force=force)


@key_app.command("issue")
def key_issue(
    subject: Annotated[str, typer.Argument(help="Subject id, e.g. dr-heart.")],
    attributes: Annotated[
        list[str],
        typer.Argument(metavar="ATTRIBUTE...", help="role:doctor dept:cardiology age=42 …"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the user key (0600).")],
    config: ConfigOption = None,
    home: HomeOption = None,
    key_file: KeyFileOption = None,
    force: ForceOption = False,
    org: OrgOption = None,
    valid_days: ValidDaysOption = None,
    record: RecordOption = True,
    msp: MspOption = None,
) -> None:
    """Issue a user key for a subject and attribute set. With --org, a multi-authority
    key from that authority: SUBJECT is the global identifier, attributes end in
    @<org>, and the key is valid for --valid-days from today."""
    from abe_service.authority import KeyAuthority

    cfg = config_from(config, home)
    passphrase, key_file = _master_secret(cfg, key_file, confirm=False)
    if org is not None:
        from ehr_abe.cli import ma

        data, key_id = ma.issue(
            cfg,
            org,
            subject,
            attributes,
            passphrase,
            key_file,
            valid_days=365 if valid_days is None else valid_days,
            record=record,
            msp=msp,
        )
        _write_output(out, data, secret=True, force=force)
        console.print(
            f"key {key_id} from {org} for {subject} written to {out}", highlight=False, markup=False
        )
        return
    auth = KeyAuthority.open(cfg.authority_dir, passphrase=passphrase, key_file=key_file)
    if valid_days is not None:  # FAME time-bound key (storage.fame_validity checks it)
        from datetime import UTC, datetime

        from abe_service.ma.validity import VALID_FROM, VALID_UNTIL, day_number

        if not 1 <= valid_days <= 3650:
            raise ConfigError("--valid-days must be 1 .. 3650")
        today = day_number(datetime.now(UTC))
        attributes = [
            *attributes,
            f"{VALID_FROM}={today}",
            f"{VALID_UNTIL}={today + valid_days}",
        ]
    issued = auth.issue_key(subject, attributes)
    _write_output(out, issued.user_key, secret=True, force=force)
    console.print(
        f"key {issued.key_id} for {subject} written to {out}", highlight=False, markup=False
    )


@key_app.command("renew")
def key_renew(
    subject: Annotated[str, typer.Argument(help="The global identifier the keys were issued to.")],
    org: Annotated[str, typer.Option("--org", help="The issuing organisation, e.g. hosp1.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the renewal (0600).")],
    config: ConfigOption = None,
    home: HomeOption = None,
    key_file: KeyFileOption = None,
    valid_days: ValidDaysOption = None,
    record: RecordOption = True,
    msp: MspOption = None,
    force: ForceOption = False,
) -> None:
    """Re-issue only the validity attributes of a multi-authority key (add the file to
    the keyring: `decrypt --key old --key renewal`)."""
    from ehr_abe.cli import ma

    cfg = config_from(config, home)
    passphrase, key_file = _master_secret(cfg, key_file, confirm=False)
    data, key_id = ma.issue(
        cfg,
        org,
        subject,
        None,
        passphrase,
        key_file,
        valid_days=365 if valid_days is None else valid_days,
        record=record,
        msp=msp,
    )
    _write_output(out, data, secret=True, force=force)
    console.print(
        f"renewal {key_id} from {org} for {subject} written to {out}", highlight=False, markup=False
    )


@authority_app.command("revoke")
def authority_revoke(
    org: Annotated[str, typer.Option("--org", help="The organisation, e.g. hosp1.")],
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")] = "",
    config: ConfigOption = None,
    home: HomeOption = None,
    msp: MspOption = None,
) -> None:
    """Revoke an authority's current key on the ledger (no new records under it)."""
    from ehr_abe.cli import ma

    console.print(ma.revoke(config_from(config, home), org, reason, msp))


@authority_app.command("list")
def authority_list(
    org: Annotated[str | None, typer.Option("--org", help="Only this authority.")] = None,
    config: ConfigOption = None,
    home: HomeOption = None,
) -> None:
    """Multi-authority authorities registered on the ledger."""
    from ehr_abe.cli import ma

    for text in ma.show(config_from(config, home), org):
        console.print(text, highlight=False, markup=False)


def encrypt(
    policy: Annotated[
        str,
        typer.Option(
            "--policy", "-p", help="e.g. '(role:doctor and dept:cardiology) or patient:p-17'"
        ),
    ],
    input_: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Plaintext file, or - for stdin.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Envelope file, or - for stdout.")],
    context: Annotated[
        str, typer.Option(help="Associated data the decryptor must repeat (e.g. a record id).")
    ] = "",
    params: Annotated[
        Path | None, typer.Option(help="Public parameters file (default: the local authority's).")
    ] = None,
    authority_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--authority-key",
            help="Multi-authority: an authority public key file (repeat; default: the ledger's "
            "registered keys).",
        ),
    ] = None,
    config: ConfigOption = None,
    home: HomeOption = None,
    force: ForceOption = False,
) -> None:
    """Encrypt a file under a policy into a hybrid envelope. A policy naming authorities
    (role:doctor@hosp1) is multi-authority: the authorities' keys come from the ledger."""
    from abe_service.envelope import AbeEncryptor
    from abe_service.ma.router import is_multi_authority

    if is_multi_authority(policy):
        from ehr_abe.cli import ma

        if authority_key:
            from abe_service.ma.envelope import MaEncryptor

            ma_enc = MaEncryptor.from_public_keys([_read_input(p) for p in authority_key])
            data = ma_enc.encrypt(policy, _read_input(input_), context.encode())
        else:
            ledger_enc = ma.encryptor_from_ledger(config_from(config, home))
            data = ledger_enc.encrypt(policy, _read_input(input_), context.encode())
        _write_output(out, data, secret=False, force=force)
        return
    if params is not None:
        enc = AbeEncryptor.from_public_params(_read_input(params))
    else:
        from abe_service.authority import KeyAuthority

        enc = KeyAuthority.open(config_from(config, home).authority_dir, public_only=True).encryptor
    envelope = enc.encrypt(policy, _read_input(input_), context.encode())
    _write_output(out, envelope, secret=False, force=force)


def decrypt(
    key: Annotated[
        list[Path],
        typer.Option(
            "--key",
            "-k",
            help="Your user key file; repeat for multi-authority keys of one identifier "
            "(one per authority, plus renewals).",
        ),
    ],
    input_: Annotated[
        Path, typer.Argument(metavar="ENVELOPE", help="Envelope file, or - for stdin.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Plaintext file, or - for stdout.")],
    context: Annotated[str, typer.Option(help="The context given at encryption.")] = "",
    force: ForceOption = False,
) -> None:
    """Decrypt an envelope with a user key (locally; the key never leaves this machine).
    Exit 3 if the key does not satisfy the policy, 4 if the envelope was tampered with."""
    from abe_service.client import AbeKeyring
    from abe_service.ma.router import envelope_scheme
    from abe_service.ma.scheme import SCHEME_ID as MA_SCHEME

    envelope = _read_input(input_)
    if envelope_scheme(envelope) == MA_SCHEME:
        from abe_service.ma.envelope import MaKeyring

        ring = MaKeyring.from_user_keys([_read_input(k) for k in key])
        plaintext = ring.decrypt(envelope, context.encode())
    else:
        if len(key) != 1:
            raise ConfigError("a FAME envelope is opened with one key")
        plaintext = AbeKeyring.from_file(key[0]).decrypt(envelope, context.encode())
    _write_output(out, plaintext, secret=True, force=force)
