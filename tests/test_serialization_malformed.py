"""Every deserializer rejects malformed input with DecodeError, and only DecodeError.

Covers public parameters, master keys, user keys, envelopes and the sealed
master key (through `KeyAuthority.open`): empty input, random bytes,
truncations, objects of another kind, other versions and schemes, points off
the curve, points on the curve but outside the prime-order subgroup, the
identity, non-canonical encodings, wrong element counts and bad scalars.

The bad points are built here from first principles with Python integers (no
cofactor clearing), and checked against py-arkworks-bls12381 as an
independent oracle: it must agree that they are on the curve and outside the
r-torsion, so the rejection we see is really the subgroup check.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import py_arkworks_bls12381 as ark
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.authority import PUBLIC_PARAMS_FILE, SEALED_MASTER_KEY_FILE, KeyAuthority
from abe_service.envelope import AbeDecryptor, AbeEncryptor, envelope_policy
from abe_service.fame import Fame
from abe_service.pairing.base import PairingBackend
from abe_service.serialization import (
    UserKey,
    authority_id,
    envelope_from_bytes,
    master_key_from_bytes,
    master_key_to_bytes,
    public_params_from_bytes,
    public_params_to_bytes,
    user_key_from_bytes,
    user_key_to_bytes,
)
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError

P = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
R = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
COMPRESSED, INFINITY, SIGN = 0x80, 0x40, 0x20  # flag bits of byte 0 (zcash/IETF encoding)
PASSPHRASE = b"correct horse battery staple"


# -- curve arithmetic with Python ints, just enough to build bad points -------------
Fp2 = tuple[int, int]  # c0 + c1·u, u² = -1


def _fp_sqrt(v: int) -> int | None:
    y = pow(v, (P + 1) // 4, P)  # p ≡ 3 (mod 4)
    return y if y * y % P == v % P else None


def _fp2_mul(a: Fp2, b: Fp2) -> Fp2:
    return ((a[0] * b[0] - a[1] * b[1]) % P, (a[0] * b[1] + a[1] * b[0]) % P)


def _fp2_pow(a: Fp2, e: int) -> Fp2:
    out: Fp2 = (1, 0)
    while e:
        if e & 1:
            out = _fp2_mul(out, a)
        a, e = _fp2_mul(a, a), e >> 1
    return out


def _fp2_sqrt(a: Fp2) -> Fp2 | None:
    """Adj & Rodríguez-Henríquez 2012, Algorithm 9 (p ≡ 3 mod 4)."""
    a1 = _fp2_pow(a, (P - 3) // 4)
    alpha = _fp2_mul(_fp2_mul(a1, a1), a)
    x0 = _fp2_mul(a1, a)
    if alpha == (P - 1, 0):
        x = _fp2_mul((0, 1), x0)
    else:
        x = _fp2_mul(_fp2_pow(((1 + alpha[0]) % P, alpha[1]), (P - 1) // 2), x0)
    return x if _fp2_mul(x, x) == (a[0] % P, a[1] % P) else None


def _g1_encode(x: int, y_is_larger: bool) -> bytes:
    out = bytearray(x.to_bytes(48, "big"))
    out[0] |= COMPRESSED | (SIGN if y_is_larger else 0)
    return bytes(out)


def _g2_encode(x: Fp2, y_is_larger: bool) -> bytes:
    out = bytearray(x[1].to_bytes(48, "big") + x[0].to_bytes(48, "big"))  # c1 first
    out[0] |= COMPRESSED | (SIGN if y_is_larger else 0)
    return bytes(out)


def g1_on_curve_outside_subgroup() -> bytes:
    """The first x = 1, 2, … with x³ + 4 a square: a point of E(Fp), cofactor not cleared."""
    for x in range(1, 1000):
        y = _fp_sqrt(x**3 + 4)
        if y is not None:
            return _g1_encode(x, y > (P - 1) // 2)
    raise AssertionError("unreachable")


def g1_off_curve() -> bytes:
    """An x with x³ + 4 not a square: no point of E(Fp) has it."""
    x = next(x for x in range(1, 1000) if _fp_sqrt(x**3 + 4) is None)
    return _g1_encode(x, False)


def g2_on_curve_outside_subgroup() -> bytes:
    for c0 in range(1, 1000):
        x: Fp2 = (c0, 1)
        rhs = _fp2_mul(_fp2_mul(x, x), x)
        y = _fp2_sqrt(((rhs[0] + 4) % P, (rhs[1] + 4) % P))  # E': y² = x³ + 4(1 + u)
        if y is not None:
            larger = y[1] > (P - 1) // 2 if y[1] else y[0] > (P - 1) // 2
            return _g2_encode(x, larger)
    raise AssertionError("unreachable")


def g2_off_curve() -> bytes:
    for c0 in range(1, 1000):
        x: Fp2 = (c0, 1)
        rhs = _fp2_mul(_fp2_mul(x, x), x)
        if _fp2_sqrt(((rhs[0] + 4) % P, (rhs[1] + 4) % P)) is None:
            return _g2_encode(x, False)
    raise AssertionError("unreachable")


def _flip_compression_flag(valid: bytes) -> bytes:
    return bytes([valid[0] & ~COMPRESSED & 0xFF]) + valid[1:]


def bad_g1(valid: bytes) -> dict[str, bytes]:
    identity = bytes([COMPRESSED | INFINITY]) + bytes(47)
    return {
        "off_curve": g1_off_curve(),
        "not_in_subgroup": g1_on_curve_outside_subgroup(),
        "identity": identity,
        "identity_with_sign_bit": bytes([identity[0] | SIGN]) + identity[1:],
        "identity_with_nonzero_x": identity[:-1] + b"\x01",
        "x_not_reduced": _g1_encode(P + 4, False),
        "uncompressed_flag": _flip_compression_flag(valid),
        "all_zero": bytes(48),
        "short": valid[:47],
        "long": valid + b"\x00",
        "uncompressed_size": valid + valid,
        "g2_sized": bytes(96),
    }


def bad_g2(valid: bytes) -> dict[str, bytes]:
    identity = bytes([COMPRESSED | INFINITY]) + bytes(95)
    return {
        "off_curve": g2_off_curve(),
        "not_in_subgroup": g2_on_curve_outside_subgroup(),
        "identity": identity,
        "identity_with_sign_bit": bytes([identity[0] | SIGN]) + identity[1:],
        "identity_with_nonzero_x": identity[:-1] + b"\x05",
        "x_not_reduced": _g2_encode((P + 1, 1), False),
        "uncompressed_flag": _flip_compression_flag(valid),
        "all_zero": bytes(96),
        "short": valid[:95],
        "long": valid + b"\x00",
        "g1_sized": valid[:48],
    }


def _gt_encode(coefficients: dict[int, int]) -> bytes:
    """mcl's GT encoding: twelve 48-byte big-endian Fp values (Fp2 as c1, c0)."""
    out = bytearray(576)
    for index, value in coefficients.items():
        out[48 * index : 48 * (index + 1)] = value.to_bytes(48, "big")
    return bytes(out)


def bad_gt(valid: bytes) -> dict[str, bytes]:
    return {
        "identity": _gt_encode({1: 1}),  # the element 1 (c0 of the first Fp2 is chunk 1)
        "two_not_in_cyclotomic_subgroup": _gt_encode({1: 2}),
        "zero": bytes(576),
        "coefficient_not_reduced": _gt_encode({1: P + 1}),
        "short": valid[:-1],
        "long": valid + b"\x00",
    }


def test_bad_points_are_what_they_claim_to_be() -> None:
    """py-arkworks, decoding without checks, agrees: on the curve, outside the subgroup."""
    for cls, encoding in (
        (ark.G1Point, g1_on_curve_outside_subgroup()),
        (ark.G2Point, g2_on_curve_outside_subgroup()),
    ):
        point = cls.from_compressed_bytes_unchecked(encoding)
        assert not point.is_in_subgroup()
        with pytest.raises(BaseException):  # noqa: B017 - a Rust panic type
            cls.from_compressed_bytes(encoding)
    for cls, encoding in ((ark.G1Point, g1_off_curve()), (ark.G2Point, g2_off_curve())):
        with pytest.raises(BaseException):  # noqa: B017
            cls.from_compressed_bytes_unchecked(encoding)


# -- fixtures: one valid object of each kind -------------------------------------------
@dataclass(frozen=True)
class Objects:
    group: PairingBackend
    public_params: bytes
    master_key: bytes
    user_key: bytes
    envelope: bytes
    authority_dir: Path
    sealed_master_key: bytes


@pytest.fixture(scope="module", params=["mcl", "pymcl"])
def objs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Objects:
    backend: str = request.param
    directory = tmp_path_factory.mktemp(f"authority-{backend}")
    authority = KeyAuthority.setup(directory, passphrase=PASSPHRASE, backend=backend)
    group = authority.fame.group
    pp = authority.public_params
    # A master key serialized in the clear, as the sealed file holds it inside.
    fame = Fame(group)
    pk, msk = fame.setup()
    pp2 = public_params_to_bytes(group, pk)
    user_key = authority.issue_key("dr-house", ["role:doctor", "dept:cardiology"]).user_key
    envelope = AbeEncryptor.from_public_params(pp, backend).encrypt(
        "role:doctor and dept:cardiology", b"heart rate 72", b"ctx"
    )
    return Objects(
        group=group,
        public_params=pp,
        master_key=master_key_to_bytes(group, msk, authority_id(pp2)),
        user_key=user_key,
        envelope=envelope,
        authority_dir=directory,
        sealed_master_key=(directory / SEALED_MASTER_KEY_FILE).read_bytes(),
    )


Parser = Callable[[PairingBackend, bytes], object]

PARSERS: dict[str, Parser] = {
    "public_params": public_params_from_bytes,
    "master_key": master_key_from_bytes,
    "user_key": user_key_from_bytes,
    "envelope": envelope_from_bytes,
    "envelope_policy": lambda _group, data: envelope_policy(data),
}
VALID_FOR: dict[str, str] = {
    "public_params": "public_params",
    "master_key": "master_key",
    "user_key": "user_key",
    "envelope": "envelope",
    "envelope_policy": "envelope",
}
MESSAGES: dict[str, type[Message]] = {
    "public_params": fpb.PublicParams,
    "master_key": fpb.MasterKey,
    "user_key": fpb.UserKey,
    "envelope": fpb.Envelope,
}


def _valid(objs: Objects, parser: str) -> bytes:
    data: bytes = getattr(objs, VALID_FOR[parser])
    return data


def _open_sealed(objs: Objects, sealed: bytes, tmp_path: Path) -> None:
    """KeyAuthority.open on a copy of the authority whose sealed file is `sealed`."""
    (tmp_path / PUBLIC_PARAMS_FILE).write_bytes(objs.public_params)
    (tmp_path / SEALED_MASTER_KEY_FILE).write_bytes(sealed)
    KeyAuthority.open(tmp_path, passphrase=PASSPHRASE, backend=objs.group.name)


def test_valid_objects_parse(objs: Objects, tmp_path: Path) -> None:
    """The baseline every negative case below is a mutation of."""
    for name, parse in PARSERS.items():
        parse(objs.group, _valid(objs, name))
    _open_sealed(objs, objs.sealed_master_key, tmp_path)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_empty_and_non_bytes(objs: Objects, parser: str) -> None:
    for data in (b"", bytes(bytearray()), b"\x00", b"\x08"):
        with pytest.raises(DecodeError):
            PARSERS[parser](objs.group, data)
    with pytest.raises(DecodeError):
        PARSERS[parser](objs.group, "not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_random_bytes(objs: Objects, parser: str) -> None:
    rng = random.Random(f"random-bytes-{parser}")
    for _ in range(200):
        data = rng.randbytes(rng.randrange(1, 1500))
        with pytest.raises(DecodeError):
            PARSERS[parser](objs.group, data)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=600), parser=st.sampled_from(sorted(PARSERS)))
def test_arbitrary_bytes_raise_only_decode_error(objs: Objects, data: bytes, parser: str) -> None:
    # No valid object fits in 600 bytes of noise, so every input must be refused.
    with pytest.raises(DecodeError):
        PARSERS[parser](objs.group, data)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_every_truncation(objs: Objects, parser: str) -> None:
    valid = _valid(objs, parser)
    for n in range(len(valid)):
        with pytest.raises(DecodeError):
            PARSERS[parser](objs.group, valid[:n])


@pytest.mark.parametrize(
    ("parser", "other"),
    [
        (parser, other)
        for parser in sorted(PARSERS)
        for other in ("public_params", "master_key", "user_key", "envelope", "sealed")
        if VALID_FOR[parser] != other
    ],
)
def test_object_of_another_kind(objs: Objects, parser: str, other: str) -> None:
    data = objs.sealed_master_key if other == "sealed" else getattr(objs, other)
    with pytest.raises(DecodeError):
        PARSERS[parser](objs.group, data)


def test_sealed_parser_rejects_other_kinds(objs: Objects, tmp_path: Path) -> None:
    for data in (objs.public_params, objs.master_key, objs.user_key, objs.envelope):
        with pytest.raises(DecodeError):
            _open_sealed(objs, data, tmp_path)


def _mutated(data: bytes, cls: type[Message], mutate: Callable[[Message], None]) -> bytes:
    msg = cls.FromString(data)
    mutate(msg)
    return msg.SerializeToString()


def _set(field: str, value: object) -> Callable[[Message], None]:
    return lambda msg: setattr(msg, field, value)


@pytest.mark.parametrize("parser", sorted(MESSAGES))
@pytest.mark.parametrize(
    "mutation",
    [
        ("version", 0),
        ("version", 2),
        ("version", 2**32 - 1),
        ("scheme", "fame-bls12381-v2"),
        ("scheme", ""),
        ("scheme", "FAME-BLS12381-V1"),
        ("kind", 0),
    ],
    ids=lambda m: f"{m[0]}={m[1]!r}",
)
def test_wrong_version_scheme_or_kind(
    objs: Objects, parser: str, mutation: tuple[str, object]
) -> None:
    field, value = mutation
    valid = _valid(objs, parser)
    if field == "version" and value == getattr(MESSAGES[parser].FromString(valid), "version"):  # noqa: B009
        value = int(value) + 1  # type: ignore[call-overload]  # envelopes are at version 2
    data = _mutated(valid, MESSAGES[parser], _set(field, value))
    with pytest.raises(DecodeError):
        PARSERS[parser](objs.group, data)


# -- every point field, every kind of bad point ------------------------------------------
def _point_fields(kind: str) -> list[tuple[str, str, Callable[[Message, bytes], None]]]:
    """(field name, group, setter) for each point-valued field of a message kind."""

    def scalar_field(name: str) -> Callable[[Message, bytes], None]:
        return lambda msg, value: setattr(msg, name, value)

    def repeated(name: str, i: int) -> Callable[[Message, bytes], None]:
        def set_item(msg: Message, value: bytes) -> None:
            getattr(msg, name)[i] = value

        return set_item

    def sub(name: str, i: int, attr: str) -> Callable[[Message, bytes], None]:
        return lambda msg, value: setattr(getattr(msg, name)[i], attr, value)

    fields: dict[str, list[tuple[str, str, Callable[[Message, bytes], None]]]] = {
        "public_params": [
            ("h1", "G2", scalar_field("h1")),
            ("h2", "G2", scalar_field("h2")),
            ("t1", "GT", scalar_field("t1")),
            ("t2", "GT", scalar_field("t2")),
        ],
        "master_key": [(f, "G1", scalar_field(f)) for f in ("g_d1", "g_d2", "g_d3")],
        "user_key": [(f"sk0[{i}]", "G2", repeated("sk0", i)) for i in range(3)]
        + [(f"sk_prime[{i}]", "G1", repeated("sk_prime", i)) for i in range(3)]
        + [(f"parts[1].{a}", "G1", sub("parts", 1, a)) for a in ("sk1", "sk2", "sk3")],
        "envelope": [(f"ct0[{i}]", "G2", repeated("ct0", i)) for i in range(3)]
        + [(f"rows[1].{a}", "G1", sub("rows", 1, a)) for a in ("ct1", "ct2", "ct3")],
    }
    return fields[kind]


@pytest.mark.parametrize("parser", sorted(MESSAGES))
def test_bad_points_in_every_point_field(objs: Objects, parser: str) -> None:
    valid = _valid(objs, parser)
    g = objs.group
    samples = {
        "G1": g.g1_to_bytes(g.g1_generator()),
        "G2": g.g2_to_bytes(g.g2_generator()),
        "GT": g.gt_to_bytes(g.pairing(g.g1_generator(), g.g2_generator())),
    }
    makers = {"G1": bad_g1, "G2": bad_g2, "GT": bad_gt}
    checked = 0
    for field, group_name, setter in _point_fields(parser):
        # Control: a valid (other) element in the field still parses.
        def put_valid(
            msg: Message, s: Callable[[Message, bytes], None] = setter, gn: str = group_name
        ) -> None:
            s(msg, samples[gn])

        PARSERS[parser](g, _mutated(valid, MESSAGES[parser], put_valid))
        for case, bad in makers[group_name](samples[group_name]).items():

            def put_bad(
                msg: Message, s: Callable[[Message, bytes], None] = setter, b: bytes = bad
            ) -> None:
                s(msg, b)

            data = _mutated(valid, MESSAGES[parser], put_bad)
            with pytest.raises(DecodeError):
                PARSERS[parser](g, data)
                pytest.fail(f"{parser}.{field} accepted a {group_name} point: {case}")
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("which", ["G1", "G2"])
def test_backend_point_decoders_directly(objs: Objects, which: str) -> None:
    g = objs.group
    if which == "G1":
        decode, valid = g.g1_from_bytes, g.g1_to_bytes(g.g1_generator())
        cases = bad_g1(valid)
    else:
        decode, valid = g.g2_from_bytes, g.g2_to_bytes(g.g2_generator())
        cases = bad_g2(valid)
    for case, data in cases.items():
        with pytest.raises(DecodeError):
            decode(data)
            pytest.fail(case)
    # The canonical identity is accepted only where asked for.
    identity = cases["identity"]
    assert decode(identity, allow_identity=True) is not None
    for case in (
        "off_curve",
        "not_in_subgroup",
        "x_not_reduced",
        "uncompressed_flag",
        "identity_with_sign_bit",
    ):
        with pytest.raises(DecodeError):
            decode(cases[case], allow_identity=True)
            pytest.fail(case)


def test_gt_decoder_directly(objs: Objects) -> None:
    g = objs.group
    valid = g.gt_to_bytes(g.pairing(g.g1_generator(), g.g2_generator()))
    assert g.gt_eq(g.gt_from_bytes(valid), g.pairing(g.g1_generator(), g.g2_generator()))
    for case, data in bad_gt(valid).items():
        with pytest.raises(DecodeError):
            g.gt_from_bytes(data)
            pytest.fail(case)


# -- scalars of the master key ---------------------------------------------------------------
@pytest.mark.parametrize("field", ["a1", "a2", "b1", "b2"])
@pytest.mark.parametrize(
    "value",
    [
        b"",
        bytes(32),
        R.to_bytes(32, "big"),
        (R + 1).to_bytes(32, "big"),
        b"\xff" * 32,
        b"\x01" * 31,
        b"\x01" * 33,
    ],
    ids=["empty", "zero", "order", "order+1", "max", "short", "long"],
)
def test_master_key_bad_scalars(objs: Objects, field: str, value: bytes) -> None:
    data = _mutated(objs.master_key, fpb.MasterKey, _set(field, value))
    with pytest.raises(DecodeError):
        master_key_from_bytes(objs.group, data)


# -- element counts ----------------------------------------------------------------------------
def _resize(name: str, n: int) -> Callable[[Message], None]:
    def resize(msg: Message) -> None:
        items = getattr(msg, name)
        if n < len(items):
            del items[n:]
        else:
            items.extend([items[0]] * (n - len(items)))

    return resize


@pytest.mark.parametrize(
    ("parser", "name", "n"),
    [
        ("user_key", "sk0", 0),
        ("user_key", "sk0", 2),
        ("user_key", "sk0", 4),
        ("user_key", "sk_prime", 0),
        ("user_key", "sk_prime", 2),
        ("user_key", "sk_prime", 4),
        ("envelope", "ct0", 0),
        ("envelope", "ct0", 2),
        ("envelope", "ct0", 4),
        ("envelope", "rows", 0),
    ],
)
def test_wrong_element_counts(objs: Objects, parser: str, name: str, n: int) -> None:
    data = _mutated(_valid(objs, parser), MESSAGES[parser], _resize(name, n))
    with pytest.raises(DecodeError):
        PARSERS[parser](objs.group, data)


@pytest.mark.parametrize("n_rows", [1, 3, 8])
def test_envelope_rows_not_matching_its_policy(objs: Objects, n_rows: int) -> None:
    """The policy 'a and b' has two rows; a header with another count is malformed."""
    data = _mutated(objs.envelope, fpb.Envelope, _resize("rows", n_rows))
    with pytest.raises(DecodeError):
        envelope_policy(data)
    decryptor = AbeDecryptor.from_user_key(objs.user_key, objs.group.name)
    with pytest.raises(DecodeError):
        decryptor.decrypt(data, b"ctx")


@pytest.mark.parametrize(
    "mutation",
    [
        ("nonce", b""),
        ("nonce", b"\x00" * 11),
        ("nonce", b"\x00" * 13),
        ("ciphertext", b""),
        ("ciphertext", b"\x00" * 15),
        ("policy", ""),
    ],
    ids=lambda m: f"{m[0]}-{len(m[1])}",
)
def test_envelope_body_fields(objs: Objects, mutation: tuple[str, bytes | str]) -> None:
    data = _mutated(objs.envelope, fpb.Envelope, _set(*mutation))
    with pytest.raises(DecodeError):
        envelope_from_bytes(objs.group, data)


@pytest.mark.parametrize("policy", ["a and", "role:doctor and and b", "((", "x" * 600 + ":y"])
def test_envelope_with_unparseable_policy(objs: Objects, policy: str) -> None:
    data = _mutated(objs.envelope, fpb.Envelope, _set("policy", policy))
    with pytest.raises(DecodeError):
        envelope_policy(data)
    with pytest.raises(DecodeError):
        AbeDecryptor.from_user_key(objs.user_key, objs.group.name).decrypt(data, b"ctx")


# -- user-key specific structure ------------------------------------------------------------------
def _user_key_message(objs: Objects) -> fpb.UserKey:
    return fpb.UserKey.FromString(objs.user_key)


def test_user_key_labels(objs: Objects) -> None:
    for label in ("", "x" * 513):
        msg = _user_key_message(objs)
        msg.parts[0].label = label
        with pytest.raises(DecodeError):
            user_key_from_bytes(objs.group, msg.SerializeToString())
    msg = _user_key_message(objs)
    msg.parts[1].label = msg.parts[0].label  # repeated label
    with pytest.raises(DecodeError):
        user_key_from_bytes(objs.group, msg.SerializeToString())


def test_user_key_authority_binding(objs: Objects) -> None:
    msg = _user_key_message(objs)
    msg.authority_id = "0" * 32
    with pytest.raises(DecodeError):
        user_key_from_bytes(objs.group, msg.SerializeToString())
    msg = _user_key_message(objs)
    msg.public_params = msg.public_params[:-1]
    with pytest.raises(DecodeError):
        user_key_from_bytes(objs.group, msg.SerializeToString())


def test_user_key_part_missing_a_point(objs: Objects) -> None:
    msg = _user_key_message(objs)
    msg.parts[0].ClearField("sk3")
    with pytest.raises(DecodeError):
        user_key_from_bytes(objs.group, msg.SerializeToString())


def test_round_trip_of_a_parsed_user_key_is_exact(objs: Objects) -> None:
    key: UserKey = user_key_from_bytes(objs.group, objs.user_key)
    assert user_key_to_bytes(objs.group, key) == objs.user_key


# -- the sealed master key, through KeyAuthority.open ---------------------------------------------------
def test_sealed_empty_and_random(objs: Objects, tmp_path: Path) -> None:
    rng = random.Random("sealed")
    for data in [b"", b"\x00", *(rng.randbytes(rng.randrange(1, 600)) for _ in range(50))]:
        with pytest.raises(DecodeError):
            _open_sealed(objs, data, tmp_path)


def test_sealed_every_truncation(objs: Objects, tmp_path: Path) -> None:
    sealed = objs.sealed_master_key
    for n in range(len(sealed)):
        with pytest.raises(DecodeError):
            _open_sealed(objs, sealed[:n], tmp_path)
            pytest.fail(f"prefix of {n} bytes")


@pytest.mark.parametrize(
    "mutation",
    [
        ("version", 2),
        ("version", 0),
        ("kind", 1),
        ("kdf", "argon2"),
        ("kdf", ""),
        ("salt", b""),
        ("salt", b"\x00" * 15),
        ("nonce", b""),
        ("nonce", b"\x00" * 11),
        ("nonce", b"\x00" * 200),
        ("ciphertext", b""),
        ("ciphertext", b"\x00" * 16),
        ("scrypt_log2_n", 0),
        ("scrypt_log2_n", 64),
        ("scrypt_r", 0),
        ("scrypt_p", 0),
        ("scrypt_p", 1000),
    ],
    ids=lambda m: f"{m[0]}={m[1]!r}"[:40],
)
def test_sealed_bad_fields(objs: Objects, tmp_path: Path, mutation: tuple[str, object]) -> None:
    data = _mutated(objs.sealed_master_key, fpb.SealedMasterKey, _set(*mutation))
    with pytest.raises(DecodeError):
        _open_sealed(objs, data, tmp_path)


def test_sealed_master_key_with_a_bad_point_inside(objs: Objects, tmp_path: Path) -> None:
    """A correctly sealed master key whose content is malformed is still a DecodeError."""
    from abe_service.authority import seal_master_key

    bad = _mutated(objs.master_key, fpb.MasterKey, _set("g_d1", g1_on_curve_outside_subgroup()))
    auth = authority_id(objs.public_params)
    with pytest.raises(DecodeError):
        _open_sealed(objs, seal_master_key(bad, auth, PASSPHRASE, None), tmp_path)
    # ...and a sound master key of another authority is refused as such.
    foreign = seal_master_key(objs.master_key, auth, PASSPHRASE, None)
    with pytest.raises(DecodeError):
        _open_sealed(objs, foreign, tmp_path)
