"""Multi-authority objects on the wire: canonical, validated, typed errors for any input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.ma.envelope import MaEncryptor, MaKeyring, envelope_policy
from abe_service.ma.scheme import SCHEME_ID, MultiAuthority
from abe_service.ma.serialization import (
    IssuedKey,
    fingerprint,
    public_key_from_bytes,
    public_key_to_bytes,
    secret_key_from_bytes,
    secret_key_to_bytes,
    user_key_from_bytes,
    user_key_to_bytes,
)
from abe_service.pairing.base import get_backend
from abe_service.policy import expand_attributes
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError, EhrAbeError, IntegrityError

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def world() -> dict[str, object]:
    ma = MultiAuthority(get_backend())
    keys = {n: ma.authority_setup(n) for n in ("hosp1", "hosp2")}
    pk_bytes = {n: public_key_to_bytes(ma.group, pk) for n, (pk, _) in keys.items()}
    issued = [
        IssuedKey(
            n,
            "alice",
            f"k-{n}",
            (a,),
            fingerprint(pk_bytes[n]),
            ma.keygen(keys[n][1], "alice", sorted(expand_attributes([a]))),
        )
        for n, a in (("hosp1", "x@hosp1"), ("hosp2", "y@hosp2"))
    ]
    user_keys = [user_key_to_bytes(ma.group, k) for k in issued]
    enc = MaEncryptor.from_public_keys(list(pk_bytes.values()))
    envelope = enc.encrypt("x@hosp1 and y@hosp2", b"payload", b"ctx")
    return {
        "ma": ma,
        "keys": keys,
        "pk_bytes": pk_bytes,
        "user_keys": user_keys,
        "envelope": envelope,
    }


def test_round_trips(world: dict[str, object]) -> None:
    ma = world["ma"]
    assert isinstance(ma, MultiAuthority)
    keys: dict = world["keys"]  # type: ignore[assignment,type-arg]
    pk_bytes: dict = world["pk_bytes"]  # type: ignore[assignment,type-arg]
    pk, sk = keys["hosp1"]
    again = public_key_from_bytes(ma.group, pk_bytes["hosp1"])
    assert again.authority == "hosp1" and ma.group.g1_eq(again.g_y, pk.g_y)
    sk2, fp = secret_key_from_bytes(ma.group, secret_key_to_bytes(ma.group, sk, pk_bytes["hosp1"]))
    assert (sk2.alpha, sk2.y, fp) == (sk.alpha, sk.y, fingerprint(pk_bytes["hosp1"]))
    ring = MaKeyring.from_user_keys(world["user_keys"])  # type: ignore[arg-type]
    assert ring.decrypt(world["envelope"], b"ctx") == b"payload"  # type: ignore[arg-type]
    assert envelope_policy(world["envelope"]) == "x@hosp1 and y@hosp2"  # type: ignore[arg-type]


def test_structural_refusals(world: dict[str, object]) -> None:
    env: bytes = world["envelope"]  # type: ignore[assignment]
    base = fpb.Envelope.FromString(env)

    def variant(change: object) -> bytes:
        m = fpb.Envelope()
        m.CopyFrom(base)
        change(m)  # type: ignore[operator]
        return m.SerializeToString(deterministic=True)

    bad = [
        variant(lambda m: m.ma_rows.pop()),  # rows do not match the policy
        variant(lambda m: m.ma_authorities.pop()),  # authorities do not match
        variant(lambda m: m.ma_authorities.reverse()),  # unsorted
        variant(lambda m: setattr(m, "authority_id", "a-x")),  # FAME fields
        variant(lambda m: setattr(m, "scheme", "fame-bls12381-v1")),
        variant(lambda m: setattr(m, "version", 1)),  # not key-committing
        variant(lambda m: setattr(m, "version", 3)),
        variant(lambda m: setattr(m, "key_commitment", b"")),
        variant(lambda m: setattr(m.ma_rows[0], "c4", m.ma_rows[0].c4[:-1])),
        env + b"\x00",  # not canonical
    ]
    ring = MaKeyring.from_user_keys(world["user_keys"])  # type: ignore[arg-type]
    for b in bad:
        with pytest.raises(DecodeError):
            ring.decrypt(b, b"ctx")
    # a row element off the curve or out of the subgroup: refused before any pairing
    off = variant(lambda m: setattr(m.ma_rows[0], "c2", b"\x80" + b"\x11" * 47))
    with pytest.raises(DecodeError):
        ring.decrypt(off, b"ctx")
    # a different authority fingerprint, or another key commitment: bound, refused
    forged = variant(lambda m: setattr(m, "key_commitment", b"\x02" * 32))
    with pytest.raises(IntegrityError):
        ring.decrypt(forged, b"ctx")
    swapped = variant(lambda m: setattr(m.ma_authorities[0], "public_key_sha256", b"\x01" * 32))
    with pytest.raises(IntegrityError):
        ring.decrypt(swapped, b"ctx")


def test_user_key_refusals(world: dict[str, object]) -> None:
    ma = world["ma"]
    assert isinstance(ma, MultiAuthority)
    data: bytes = world["user_keys"][0]  # type: ignore[index]
    m = fpb.MaUserKey.FromString(data)
    m.parts[0].label = "x@hosp2"  # a part labelled with another authority's attribute
    with pytest.raises(DecodeError, match="not hosp1's"):
        user_key_from_bytes(ma.group, m.SerializeToString(deterministic=True))
    m = fpb.MaUserKey.FromString(data)
    m.scheme = "fame-bls12381-v1"
    with pytest.raises(DecodeError):
        user_key_from_bytes(ma.group, m.SerializeToString(deterministic=True))
    assert fpb.MaUserKey.FromString(data).scheme == SCHEME_ID


@SETTINGS
@given(data=st.binary(max_size=3000))
def test_random_bytes_give_typed_errors(world: dict[str, object], data: bytes) -> None:
    ma = world["ma"]
    assert isinstance(ma, MultiAuthority)
    ring = MaKeyring.from_user_keys(world["user_keys"])  # type: ignore[arg-type]
    for fn in (
        lambda: ring.decrypt(data, b"ctx"),
        lambda: envelope_policy(data),
        lambda: user_key_from_bytes(ma.group, data),
        lambda: public_key_from_bytes(ma.group, data),
    ):
        with pytest.raises(EhrAbeError):
            fn()


@SETTINGS
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_bit_flips_in_envelopes(world: dict[str, object], pos: int, bit: int) -> None:
    env: bytes = world["envelope"]  # type: ignore[assignment]
    bad = bytearray(env)
    bad[pos % len(env)] ^= 1 << bit
    ring = MaKeyring.from_user_keys(world["user_keys"])  # type: ignore[arg-type]
    with pytest.raises(EhrAbeError):
        ring.decrypt(bytes(bad), b"ctx")
