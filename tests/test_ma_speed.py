"""What makes multi-authority encryption fast, checked for correctness: hot-label G2
comb tables (the bounded cache's admission rules, and the scheme with tables in use
still encrypting and issuing keys correctly) and batched randomness."""

from __future__ import annotations

import threading

import pytest

from abe_service.ma import scheme
from abe_service.ma.hot import HotTables
from abe_service.ma.scheme import MultiAuthority, UserKey, merge_keys
from abe_service.pairing.base import BLS12_381_ORDER, get_backend
from abe_service.policy import compile_policy


class Builds:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, key: str) -> str:
        self.keys.append(key)
        return f"table:{key}"


def test_a_table_is_built_once_the_key_is_hot() -> None:
    built = Builds()
    hot = HotTables(capacity=4, after=3, build=built)
    assert [hot.use("a") for _ in range(5)] == [None, None, "table:a", "table:a", "table:a"]
    assert built.keys == ["a"]


def test_capacity_bounds_the_tables() -> None:
    built = Builds()
    hot = HotTables(capacity=3, after=1, build=built)
    for key in "abcdefgh":
        hot.use(key)
    assert len(hot) == 3


def test_cycling_over_more_hot_keys_than_fit_does_not_rebuild() -> None:
    """50 keys used in turn with room for 32: tables are built for the first 32 and
    kept; the other keys stay untabled instead of evicting one per use."""
    built = Builds()
    hot = HotTables(capacity=32, after=2, build=built)
    keys = [f"k{i}" for i in range(50)]
    for _ in range(40):
        for key in keys:
            hot.use(key)
    assert len(hot) == 32
    assert len(built.keys) == 32


def test_a_much_hotter_key_displaces_the_coldest() -> None:
    built = Builds()
    hot = HotTables(capacity=2, after=1, build=built)
    hot.use("a")
    hot.use("b")
    hot.use("b")
    assert hot.use("c") is None  # used once: not twice as often as "a"
    assert hot.use("c") == "table:c"  # now it is: "a" is displaced
    assert hot.use("a") is None  # and does not come back (2 uses, the coldest has 2)
    assert hot.use("b") == "table:b"


def test_counts_age_and_stay_bounded() -> None:
    hot: HotTables[str, str] = HotTables(capacity=1, after=1000, build=Builds())
    for i in range(5000):
        hot.use(f"once-{i}")
    assert len(hot._counts) < 1024  # aged: keys used once are forgotten


def test_capacity_zero_disables_and_clear_forgets() -> None:
    built = Builds()
    assert HotTables(capacity=0, after=1, build=built).use("a") is None
    hot = HotTables(capacity=2, after=1, build=built)
    assert hot.use("a") == "table:a"
    hot.clear()
    assert len(hot) == 0
    with pytest.raises(ValueError):
        HotTables(capacity=1, after=0, build=built)


def test_threads_share_one_table_per_key() -> None:
    built = Builds()
    hot = HotTables(capacity=8, after=1, build=built)
    results: list[str | None] = []

    def worker() -> None:
        results.extend(hot.use(k) for k in "abcd" * 50)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(hot) == 4
    assert set(results) == {"table:a", "table:b", "table:c", "table:d"}


@pytest.mark.parametrize(("backend", "prepared"), [("mcl", False), ("mcl", True), ("pymcl", True)])
def test_scheme_with_hot_label_tables(backend: str, prepared: bool) -> None:
    """After the labels become hot (here: from the second use), encryption and key issue
    take F(u)^t from the tables; every ciphertext and key still works, and a key issued
    before the tables existed opens ciphertexts made with them and vice versa."""
    ma = MultiAuthority(get_backend(backend), label_tables=3, label_table_after=2)
    if prepared:  # numba kernels, and 12-bit windows for e(g,h) and g
        ma.prepare()
    auths = {name: ma.authority_setup(name) for name in ("hosp1", "hosp2")}
    pks = {name: pk for name, (pk, _) in auths.items()}
    labels = ["a@hosp1", "b@hosp1", "c@hosp2", "d@hosp2"]  # one more than the tables
    policy = compile_policy(" and ".join(labels))

    def key() -> UserKey:
        return merge_keys(
            [
                ma.keygen(auths["hosp1"][1], "gid-1", labels[:2]),
                ma.keygen(auths["hosp2"][1], "gid-1", labels[2:]),
            ]
        )

    early_key = key()
    early = ma.encrypt(pks, policy)
    for _ in range(3):
        header, expected = ma.encrypt(pks, policy)
        late_key = key()
        for k in (early_key, late_key):
            assert ma.group.gt_eq(ma.decrypt(policy, header, k), expected)
        assert ma.group.gt_eq(ma.decrypt(policy, early[0], late_key), early[1])
    assert len(ma._label_tables) == 3
    ma.clear_caches()
    assert len(ma._label_tables) == 0


def test_batched_randomness_is_in_range_and_redraws_out_of_range_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group = get_backend("mcl")
    values = scheme._rands(group, 200)
    assert len(values) == 200 and len(set(values)) == 200
    assert all(0 < k < BLS12_381_ORDER for k in values)
    assert max(values).bit_length() == 255  # the top bit is used
    # Candidates 0 and r (and above) are never returned: each is redrawn.
    r_bytes = BLS12_381_ORDER.to_bytes(32, "little")
    monkeypatch.setattr(
        scheme.secrets, "token_bytes", lambda n: bytes(32) + r_bytes + bytes(n - 64)
    )
    redrawn = scheme._rands(group, 3)
    assert all(0 < k < BLS12_381_ORDER for k in redrawn[:2])
    assert 0 < redrawn[2] < BLS12_381_ORDER
