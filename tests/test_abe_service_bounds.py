"""Bounded work per request: every limit refuses the most expensive input the API
would otherwise accept, with a clear error, before the expensive step.

Before: `k of (...)` cost rows x (k-1) x 6 G1 multiplications (a 2.8 KB policy
took about two minutes to encrypt and ~11 MiB of compile cache), EvaluatePolicy
expanded any number of integer attributes (a 360 KiB request: 3 s, +220 MiB),
and the authority issued keys with more labels than the key parser accepts.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import grpc
import pytest

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring
from abe_service.policy import (
    CACHE_MAX_CELLS,
    MAX_SPAN_CELLS,
    MAX_SPAN_NONZERO,
    MAX_THRESHOLD_CHILDREN,
    compile_cache_cells,
    compile_policy,
    compile_policy_cached,
)
from abe_service.serialization import MAX_KEY_LABELS, user_key_from_bytes
from ehr_abe.server import RunningServer, start_server
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc
from ehr_common.config import load_config
from ehr_common.errors import InvalidArgument, PolicyError

PASS = b"bounded work passphrase"
#: The reported 2.8 KB policy shape: 128 of 256 attributes.
WIDE_THRESHOLD = "128 of (" + ", ".join(f"attr{i}" for i in range(256)) + ")"
WHO = (("x-ehr-subject", "dr-x"), ("x-ehr-roles", "doctor"))


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority.setup(tmp_path_factory.mktemp("a"), passphrase=PASS)


@pytest.fixture(scope="module")
def abe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[abe_pb2_grpc.AbeServiceStub]:
    cfg = load_config(env={})
    cfg.home = str(tmp_path_factory.mktemp("home"))
    cfg.server.listen = "127.0.0.1:0"
    cfg.server.services = ("abe",)
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running: RunningServer = start_server(cfg, passphrase=PASS)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield abe_pb2_grpc.AbeServiceStub(ch)
    running.stop()


def _code(fn: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        fn()  # type: ignore[operator]
    return exc.value.code()  # type: ignore[no-any-return]


# -- the policy compiler --------------------------------------------------------------------
def test_wide_thresholds_are_refused(authority: KeyAuthority) -> None:
    with pytest.raises(PolicyError, match=f"more than {MAX_THRESHOLD_CHILDREN}"):
        compile_policy(WIDE_THRESHOLD)
    with pytest.raises(PolicyError, match="threshold gate"):
        authority.encryptor.encrypt(WIDE_THRESHOLD, b"x")
    widest = (
        f"{MAX_THRESHOLD_CHILDREN - 1} of ("
        + ", ".join(f"a{i}" for i in range(MAX_THRESHOLD_CHILDREN))
        + ")"
    )
    c = compile_policy(widest)
    assert (c.rows, c.columns) == (MAX_THRESHOLD_CHILDREN, MAX_THRESHOLD_CHILDREN - 1)
    # 1 of n and n of n are `or` and `and`: no threshold columns, no width limit
    assert compile_policy("1 of (" + ", ".join(f"a{i}" for i in range(200)) + ")").columns == 1


def test_span_program_cells_are_capped() -> None:
    # comparisons are how a policy gets more rows than attributes (17 rows each here)
    wide_or = " or ".join(f"x{i} >= 1431655765" for i in range(50))
    policy = f"({wide_or}) and " + " and ".join(f"b{i}" for i in range(150))  # 1000 x 151
    with pytest.raises(PolicyError, match=f"more than {MAX_SPAN_CELLS} cells"):
        compile_policy(policy)
    ok = compile_policy(" and ".join(f"a{i}" for i in range(256)))  # 256 x 256: the largest `and`
    assert ok.rows * ok.columns == MAX_SPAN_CELLS


def test_span_program_nonzero_entries_are_capped() -> None:
    # 252 rows x 247 columns fits the cell cap, but every row is dense (64 entries)
    inner = ["62 of (" + ", ".join(f"g{j}x{i}" for i in range(63)) + ")" for j in range(4)]
    with pytest.raises(PolicyError, match=f"more than {MAX_SPAN_NONZERO}"):
        compile_policy("3 of (" + ", ".join(inner) + ")")


def test_compile_cache_is_bounded_by_cells() -> None:
    for n in range(40):  # 40 distinct 256 x 256 policies: 2.6 M cells compiled
        compile_policy_cached(" and ".join(f"c{n}x{i}" for i in range(256)))
        assert compile_cache_cells() <= CACHE_MAX_CELLS


def test_row_bases_use_reduced_scalars(authority: KeyAuthority) -> None:
    """Threshold entries j^e are reduced mod r (one MSM per base), and the result
    still decrypts: 62 of 63 with the last 62 attributes."""
    kids = [f"t{i}" for i in range(63)]
    policy = "62 of (" + ", ".join(kids) + ")"
    env = authority.encryptor.encrypt(policy, b"wide", b"")
    ring = AbeKeyring.from_bytes(authority.issue_key("t", kids[1:]).user_key)
    assert ring.decrypt(env, b"") == b"wide"


# -- the authority and the key parser agree -------------------------------------------------
def test_authority_refuses_keys_the_parser_would_refuse(authority: KeyAuthority) -> None:
    many_integers = [f"n{i}=4294967295" for i in range(256)]  # 256 x 65 labels
    with pytest.raises(InvalidArgument, match=f"more than {MAX_KEY_LABELS}"):
        authority.issue_key("x", many_integers)


def test_the_largest_key_the_authority_issues_parses(authority: KeyAuthority) -> None:
    most = [f"n{i}=4294967295" for i in range(MAX_KEY_LABELS // 65)]
    issued = authority.issue_key("x", most)
    key = user_key_from_bytes(authority.fame.group, issued.user_key)
    assert len(key.secret.sk) == 65 * len(most) <= MAX_KEY_LABELS


# -- every RPC: authenticated, bounded by its input -----------------------------------------
def test_rpcs_that_cost_work_need_an_authenticated_caller(
    abe: abe_pb2_grpc.AbeServiceStub,
) -> None:
    calls = [
        lambda md: abe.Encrypt(abe_pb2.EncryptRequest(policy="a", plaintext=b"x"), metadata=md),
        lambda md: abe.CheckPolicy(abe_pb2.CheckPolicyRequest(policy="a"), metadata=md),
        lambda md: abe.EvaluatePolicy(
            abe_pb2.EvaluatePolicyRequest(policy="a", attributes=["a"]), metadata=md
        ),
    ]
    for call in calls:
        assert _code(lambda call=call: call(())) == grpc.StatusCode.UNAUTHENTICATED
        call(WHO)
    assert abe.GetPublicParams(abe_pb2.GetPublicParamsRequest()).public_params  # public


def test_evaluate_policy_refuses_huge_attribute_lists_before_expanding(
    abe: abe_pb2_grpc.AbeServiceStub,
) -> None:
    attrs = [f"n{i}=4294967295" for i in range(24000)]  # ~360 KiB
    request = abe_pb2.EvaluatePolicyRequest(policy="n1 >= 5", attributes=attrs)
    assert request.ByteSize() > 350 * 1024
    tracemalloc.start()
    try:
        code = _code(lambda: abe.EvaluatePolicy(request, metadata=WHO))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # The request itself is ~0.4 MiB (client and server copies); expanding it was +220 MiB.
    assert peak < 32 * 1024 * 1024
    long_attr = abe_pb2.EvaluatePolicyRequest(policy="a", attributes=["a:" + "x" * 10_000])
    assert _code(lambda: abe.EvaluatePolicy(long_attr, metadata=WHO)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_expensive_policies_are_refused_by_every_rpc(abe: abe_pb2_grpc.AbeServiceStub) -> None:
    for call in (
        lambda: abe.Encrypt(
            abe_pb2.EncryptRequest(policy=WIDE_THRESHOLD, plaintext=b"x"), metadata=WHO
        ),
        lambda: abe.CheckPolicy(abe_pb2.CheckPolicyRequest(policy=WIDE_THRESHOLD), metadata=WHO),
        lambda: abe.EvaluatePolicy(
            abe_pb2.EvaluatePolicyRequest(policy=WIDE_THRESHOLD, attributes=["attr1"]),
            metadata=WHO,
        ),
    ):
        assert _code(call) == grpc.StatusCode.INVALID_ARGUMENT
    big_context = abe_pb2.EncryptRequest(policy="a", plaintext=b"x", context=b"c" * 5000)
    assert _code(lambda: abe.Encrypt(big_context, metadata=WHO)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    issue = abe_pb2.IssueUserKeyRequest(
        subject_id="x", attributes=[f"n{i}=4294967295" for i in range(5000)]
    )
    authority_md = (("x-ehr-subject", "ka"), ("x-ehr-roles", "authority"))
    assert _code(lambda: abe.IssueUserKey(issue, metadata=authority_md)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
