"""AbeService over gRPC: translation between protobuf and the key authority.

Who may call what: GetPublicParams is public (the parameters are public and
cost nothing). Every other RPC needs an authenticated caller (a client
certificate under mutual TLS; the development headers otherwise), because each
costs work (Encrypt, CheckPolicy, EvaluatePolicy) or changes state
(IssueUserKey, which also needs the `authority` role).

Bounded work: every request is checked against the same limits as the library
BEFORE any expensive step (policy limits in POLICY_LANGUAGE.md; at most
MAX_KEY_ATTRIBUTES attributes of at most MAX_ATTRIBUTE_CHARS characters before
they are expanded; plaintext at most MAX_PLAINTEXT; context at most
MAX_CONTEXT), so the time and memory of a request grow at most linearly with
its size, up to a fixed cap.
"""

from __future__ import annotations

import logging
from typing import Any

from abe_service.authority import KeyAuthority
from abe_service.envelope import MAX_CONTEXT
from abe_service.fame import SCHEME_ID
from abe_service.policy import (
    MAX_ATTRIBUTE_CHARS,
    attributes,
    compile_policy_cached,
    expand_attributes,
)
from abe_service.serialization import MAX_KEY_ATTRIBUTES
from ehr_common.api.v1 import abe_pb2 as pb
from ehr_common.api.v1 import abe_pb2_grpc as pb_grpc
from ehr_common.config import Config
from ehr_common.errors import AccessDenied, InvalidArgument
from ehr_common.identity import Authenticator, Caller

log = logging.getLogger(__name__)
MAX_PLAINTEXT = 64 * 1024 * 1024
MAX_SUBJECT_CHARS = 256
AUTHORITY_ROLE = "authority"


def _check_attributes(attrs: Any) -> list[str]:
    """The request's attributes, refused before expansion if too many or too long."""
    if len(attrs) > MAX_KEY_ATTRIBUTES:
        raise InvalidArgument(f"at most {MAX_KEY_ATTRIBUTES} attributes per request")
    out = list(attrs)
    if any(len(a) > MAX_ATTRIBUTE_CHARS for a in out):
        raise InvalidArgument(f"an attribute is longer than {MAX_ATTRIBUTE_CHARS} characters")
    return out


def load_authority_for_serving(cfg: Config, *, passphrase: bytes | None = None) -> KeyAuthority:
    """Open the configured authority; with its master key when one is available
    (passphrase, $passphrase_env or key file), else public-only (no key issue)."""
    import os
    from pathlib import Path

    a = cfg.authority
    key_file = Path(a.key_file) if a.key_file else None
    if passphrase is None and key_file is None:
        env = os.environ.get(a.passphrase_env, "")
        passphrase = env.encode() if env else None
    if passphrase is None and key_file is None:
        log.warning("no master-key passphrase or key file: serving without key issuance")
        return KeyAuthority.open(cfg.authority_dir, public_only=True)
    return KeyAuthority.open(cfg.authority_dir, passphrase=passphrase, key_file=key_file)


class AbeServicer(pb_grpc.AbeServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        authority: KeyAuthority,
        authenticator: Authenticator,
        *,
        ledger: Any = None,
        ma_validity: bool = True,
        fame_validity: bool = False,
    ):
        self.authority = authority
        self._auth = authenticator
        self._ledger = ledger  # optional LedgerClient: key issues are recorded for audit
        # Encrypt serves both schemes: multi-authority policies need the ledger's registry.
        from abe_service.ma.router import LedgerAuthorities, MaLedgerEncryptor, SchemeRouter
        from abe_service.ma.scheme import MultiAuthority

        ma = (
            MaLedgerEncryptor(
                LedgerAuthorities(
                    ledger, MultiAuthority.shared(authority.fame.group).prepare_in_background()
                )
            )
            if ledger is not None
            else None
        )
        self._router = SchemeRouter(
            authority.encryptor, ma, validity=ma_validity, fame_validity=fame_validity
        )

    def _caller(self, context: Any) -> Caller:
        return self._auth.from_context(context)

    def GetPublicParams(
        self, request: pb.GetPublicParamsRequest, context: Any
    ) -> pb.GetPublicParamsResponse:
        return pb.GetPublicParamsResponse(
            public_params=self.authority.public_params,
            scheme=SCHEME_ID,
            authority_id=self.authority.authority_id,
        )

    def IssueUserKey(
        self, request: pb.IssueUserKeyRequest, context: Any
    ) -> pb.IssueUserKeyResponse:
        caller = self._caller(context)
        if AUTHORITY_ROLE not in caller.roles:
            raise AccessDenied(
                f"{caller.subject} may not issue keys: needs the {AUTHORITY_ROLE!r} role"
            )
        if len(request.subject_id) > MAX_SUBJECT_CHARS:
            raise InvalidArgument(f"a subject id has at most {MAX_SUBJECT_CHARS} characters")
        issued = self.authority.issue_key(request.subject_id, _check_attributes(request.attributes))
        if self._ledger is not None:
            self._ledger.record_key_issue(
                caller,
                request.subject_id,
                bytes.fromhex(issued.attribute_set_hmac),
                self.authority.authority_id,
                issued.key_id,
            )
        log.info(
            "issued key %s for %s (%d attributes)",
            issued.key_id,
            request.subject_id,
            len(request.attributes),
        )
        return pb.IssueUserKeyResponse(
            user_key=issued.user_key,
            key_id=issued.key_id,
            attribute_set_hmac=issued.attribute_set_hmac,
        )

    def Encrypt(self, request: pb.EncryptRequest, context: Any) -> pb.EncryptResponse:
        self._caller(context)
        if len(request.plaintext) > MAX_PLAINTEXT:
            raise InvalidArgument(f"plaintext larger than {MAX_PLAINTEXT} bytes")
        if len(request.context) > MAX_CONTEXT:
            raise InvalidArgument(f"context larger than {MAX_CONTEXT} bytes")
        compiled = compile_policy_cached(request.policy)
        envelope = self._router.encrypt(request.policy, request.plaintext, request.context)
        # the policy the envelope was made under (multi-authority: with its validity condition)
        normal = self._router.envelope_policy(envelope)
        return pb.EncryptResponse(
            envelope=envelope, policy_normal_form=normal or compiled.normal_form
        )

    def CheckPolicy(self, request: pb.CheckPolicyRequest, context: Any) -> pb.CheckPolicyResponse:
        self._caller(context)
        compiled = compile_policy_cached(request.policy)
        return pb.CheckPolicyResponse(
            normal_form=compiled.normal_form,
            attributes=list(attributes(request.policy)),
            span_program_rows=compiled.rows,
            span_program_columns=compiled.columns,
        )

    def EvaluatePolicy(
        self, request: pb.EvaluatePolicyRequest, context: Any
    ) -> pb.EvaluatePolicyResponse:
        self._caller(context)
        attrs = _check_attributes(request.attributes)  # before compiling or expanding
        compiled = compile_policy_cached(request.policy)
        ok = compiled.satisfied_by(expand_attributes(attrs))
        return pb.EvaluatePolicyResponse(satisfied=ok, normal_form=compiled.normal_form)
