"""Every serialized object has exactly one accepted encoding.

Protobuf parsers accept unknown fields, repeated singular fields (last one
wins) and any field order; ours refuse all of them, so an object cannot be
altered (or smuggle data) without the parse failing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from abe_service.authority import SEALED_MASTER_KEY_FILE, KeyAuthority, unseal_master_key
from abe_service.envelope import AbeEncryptor, envelope_policy
from abe_service.fame import Fame
from abe_service.pairing.base import PairingBackend, get_backend
from abe_service.serialization import (
    authority_id,
    envelope_from_bytes,
    master_key_from_bytes,
    master_key_to_bytes,
    public_params_from_bytes,
    public_params_to_bytes,
    user_key_from_bytes,
)
from ehr_common.errors import DecodeError

PASSPHRASE = b"correct horse battery staple"


def _varint_field(number: int, value: int) -> bytes:
    return bytes([number << 3, value])


def _bytes_field(number: int, value: bytes) -> bytes:
    return bytes([(number << 3) | 2, len(value)]) + value


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory: Path = tmp_path_factory.mktemp("authority-canonical")
    authority = KeyAuthority.setup(directory, passphrase=PASSPHRASE)
    group = authority.fame.group
    pk, msk = Fame(group).setup()
    pp2 = public_params_to_bytes(group, pk)
    return {
        "public_params": authority.public_params,
        "master_key": master_key_to_bytes(group, msk, authority_id(pp2)),
        "user_key": authority.issue_key("dr-house", ["role:doctor", "age=40"]).user_key,
        "envelope": AbeEncryptor.from_public_params(authority.public_params).encrypt(
            "role:doctor and age > 30", b"x", b"ctx"
        ),
        "sealed": (directory / SEALED_MASTER_KEY_FILE).read_bytes(),
    }


PARSERS: dict[str, Callable[[PairingBackend, bytes], object]] = {
    "public_params": public_params_from_bytes,
    "master_key": master_key_from_bytes,
    "user_key": user_key_from_bytes,
    "envelope": envelope_from_bytes,
    "envelope_policy": lambda _g, data: envelope_policy(data),
    "sealed": lambda _g, data: unseal_master_key(data, PASSPHRASE, None),
}


def _valid(objects: dict[str, bytes], parser: str) -> bytes:
    return objects["envelope" if parser == "envelope_policy" else parser]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_canonical_objects_parse(objects: dict[str, bytes], parser: str) -> None:
    PARSERS[parser](get_backend(), _valid(objects, parser))


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize(
    "extra",
    [
        _varint_field(15, 1),  # an unknown varint field
        _bytes_field(14, b"smuggled"),  # an unknown length-delimited field
        _varint_field(2, 1),  # `version` again (same value: last one wins in protobuf)
        _varint_field(1, 0) + _varint_field(1, 0),  # `kind` reset, twice
    ],
    ids=["unknown-varint", "unknown-bytes", "repeated-version", "repeated-kind"],
)
def test_appended_fields_are_refused(objects: dict[str, bytes], parser: str, extra: bytes) -> None:
    with pytest.raises(DecodeError):
        PARSERS[parser](get_backend(), _valid(objects, parser) + extra)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_reordered_fields_are_refused(objects: dict[str, bytes], parser: str) -> None:
    """The first field (kind, a varint) moved to the end: same message, other bytes."""
    data = _valid(objects, parser)
    assert data[0] == 0x08  # field 1, varint, one-byte value
    with pytest.raises(DecodeError):
        PARSERS[parser](get_backend(), data[2:] + data[:2])


def test_unknown_field_inside_a_nested_row_is_refused(objects: dict[str, bytes]) -> None:
    from ehr_common.api.v1 import formats_pb2 as fpb

    fields = fpb.Envelope.FromString(objects["envelope"])
    head = fpb.Envelope(
        kind=fields.kind,
        version=fields.version,
        scheme=fields.scheme,
        authority_id=fields.authority_id,
        policy=fields.policy,
        ct0=fields.ct0,
    ).SerializeToString(deterministic=True)
    tail = fpb.Envelope(
        nonce=fields.nonce, ciphertext=fields.ciphertext, key_commitment=fields.key_commitment
    ).SerializeToString(deterministic=True)
    rows = [r.SerializeToString(deterministic=True) for r in fields.rows]
    # Built by hand in wire order (rows are field 7, between ct0 and nonce) ...
    clean = head + b"".join(_len_prefixed(7, r) for r in rows) + tail
    assert clean == objects["envelope"]
    envelope_from_bytes(get_backend(), clean)
    # ... and again with an unknown field inside the first row.
    rows[0] += _varint_field(9, 1)
    with pytest.raises(DecodeError):
        envelope_from_bytes(
            get_backend(), head + b"".join(_len_prefixed(7, r) for r in rows) + tail
        )


def _len_prefixed(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128 * 128
    n = len(payload)
    length = bytes([n]) if n < 128 else bytes([(n & 0x7F) | 0x80, n >> 7])
    return bytes([(number << 3) | 2]) + length + payload
