"""Key-issue records on the ledger reveal nothing a reader can test a guess against.

Before: the record held SHA-256("ehr-abe/attribute-set/v1" || sorted attributes),
unsalted, so anyone who can read the ledger recovered a key's attributes from a
small dictionary of roles and departments (43 guesses in the reported probe).
Now it is an HMAC under a record key derived from the master key, which is
never stored (only the sealed master key is).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from abe_service.authority import KeyAuthority, attribute_set_hmac, record_key
from abe_service.policy import expand_attributes
from abe_service.serialization import master_key_to_bytes
from ehr_abe.server import RunningServer, start_server
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc
from ehr_common.config import Config, load_config

PASS = b"key issue record passphrase"
ROLES = ["doctor", "nurse", "admin", "researcher", "pharmacist", "clerk", "patient", "auditor"]
DEPTS = ["cardiology", "icu", "oncology", "radiology", "er", "pediatrics", "surgery", "neurology"]
ISSUED = ["role:nurse", "dept:oncology"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Config]]:
    cfg = load_config(env={})
    cfg.home = str(tmp_path_factory.mktemp("home"))
    cfg.server.listen = "127.0.0.1:0"
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running = start_server(cfg, passphrase=PASS)
    yield running, cfg
    running.stop()


def _recorded_hash(running: RunningServer, subject: str) -> bytes:
    core = running.closers[0]
    issues = core.ledger.key_issues(subject)  # type: ignore[attr-defined]
    assert len(issues) == 1
    return bytes(issues[0].attributes_hash)


def _dictionary() -> Iterator[list[str]]:
    for role, dept in itertools.product(ROLES, DEPTS):
        yield [f"role:{role}", f"dept:{dept}"]


def _keyless_guesses(attrs: list[str]) -> Iterator[bytes]:
    """What a ledger reader can compute without any secret: the old record, and
    plain hashes of the attributes or of their normalised labels."""
    yield hashlib.sha256(
        b"ehr-abe/attribute-set/v1\x00" + "\n".join(sorted(attrs)).encode()
    ).digest()
    labels = sorted(expand_attributes(attrs))
    for text in ("\n".join(sorted(attrs)), "\n".join(labels), ",".join(labels)):
        yield hashlib.sha256(text.encode()).digest()


def test_a_dictionary_does_not_recover_a_keys_attributes(
    served: tuple[RunningServer, Config],
) -> None:
    running, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        abe = abe_pb2_grpc.AbeServiceStub(ch)
        resp = abe.IssueUserKey(
            abe_pb2.IssueUserKeyRequest(subject_id="n-1", attributes=ISSUED),
            metadata=(("x-ehr-subject", "ka"), ("x-ehr-roles", "authority")),
        )
    recorded = _recorded_hash(running, "n-1")
    assert recorded.hex() == resp.attribute_set_hmac
    guesses = 0
    for candidate in _dictionary():
        for guess in _keyless_guesses(candidate):
            guesses += 1
            assert guess != recorded, f"the attributes were recovered in {guesses} guesses"
    assert guesses == len(ROLES) * len(DEPTS) * 4


def test_the_record_is_an_hmac_under_a_key_derived_from_the_master_key(
    served: tuple[RunningServer, Config], tmp_path: Path
) -> None:
    _, cfg = served
    auth = KeyAuthority.open(cfg.authority_dir, passphrase=PASS)
    assert auth._msk is not None
    key = record_key(master_key_to_bytes(auth.fame.group, auth._msk, auth.authority_id))
    issued = auth.issue_key("n-2", ["dept:oncology", "role:nurse"])
    labels = sorted(expand_attributes(ISSUED))
    # An auditor holding the master key can check a claimed attribute set ...
    assert issued.attribute_set_hmac == attribute_set_hmac(key, labels)
    # ... equal sets name the same value, whatever their order or spelling ...
    assert auth.issue_key("n-3", ISSUED).attribute_set_hmac == issued.attribute_set_hmac
    # ... another authority gives another value for the same attributes ...
    other = KeyAuthority.setup(tmp_path / "other", passphrase=PASS)
    assert other.issue_key("n-2", ISSUED).attribute_set_hmac != issued.attribute_set_hmac
    # ... and the record key is stored nowhere.
    for f in Path(cfg.authority_dir).iterdir():
        assert key not in f.read_bytes()
