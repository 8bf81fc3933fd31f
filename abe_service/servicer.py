"""AbeService over gRPC: translation between protobuf and the key authority."""

from __future__ import annotations

import logging
from typing import Any

from abe_service.authority import KeyAuthority
from abe_service.fame import SCHEME_ID
from abe_service.policy import attributes, compile_policy, expand_attributes
from ehr_common.api.v1 import abe_pb2 as pb
from ehr_common.api.v1 import abe_pb2_grpc as pb_grpc
from ehr_common.config import Config
from ehr_common.errors import AccessDenied, InvalidArgument
from ehr_common.identity import caller_from_context

log = logging.getLogger(__name__)
MAX_PLAINTEXT = 64 * 1024 * 1024
AUTHORITY_ROLE = "authority"


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
        *,
        tls: bool,
        msp_id: str,
        ledger: Any = None,
        ma_validity: bool = True,
        fame_validity: bool = False,
    ):
        self.authority = authority
        self._tls = tls
        self._msp = msp_id
        self._ledger = ledger  # optional LedgerClient: key issues are recorded for audit
        # Encrypt serves both schemes: multi-authority policies need the ledger's registry.
        from abe_service.ma.router import LedgerAuthorities, MaLedgerEncryptor, SchemeRouter
        from abe_service.ma.scheme import MultiAuthority

        ma = (
            MaLedgerEncryptor(LedgerAuthorities(ledger, MultiAuthority(authority.fame.group)))
            if ledger is not None
            else None
        )
        self._router = SchemeRouter(
            authority.encryptor, ma, validity=ma_validity, fame_validity=fame_validity
        )

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
        caller = caller_from_context(context, tls=self._tls, default_msp=self._msp)
        if AUTHORITY_ROLE not in caller.roles:
            raise AccessDenied(
                f"{caller.subject} may not issue keys: needs the {AUTHORITY_ROLE!r} role"
            )
        issued = self.authority.issue_key(request.subject_id, list(request.attributes))
        if self._ledger is not None:
            self._ledger.record_key_issue(
                caller,
                request.subject_id,
                bytes.fromhex(issued.attribute_set_sha256),
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
            attribute_set_sha256=issued.attribute_set_sha256,
        )

    def Encrypt(self, request: pb.EncryptRequest, context: Any) -> pb.EncryptResponse:
        if len(request.plaintext) > MAX_PLAINTEXT:
            raise InvalidArgument(f"plaintext larger than {MAX_PLAINTEXT} bytes")
        compiled = compile_policy(request.policy)
        envelope = self._router.encrypt(request.policy, request.plaintext, request.context)
        # the policy the envelope was made under (multi-authority: with its validity condition)
        normal = self._router.envelope_policy(envelope)
        return pb.EncryptResponse(
            envelope=envelope, policy_normal_form=normal or compiled.normal_form
        )

    def CheckPolicy(self, request: pb.CheckPolicyRequest, context: Any) -> pb.CheckPolicyResponse:
        compiled = compile_policy(request.policy)
        return pb.CheckPolicyResponse(
            normal_form=compiled.normal_form,
            attributes=list(attributes(request.policy)),
            span_program_rows=len(compiled.matrix),
            span_program_columns=max((len(r) for r in compiled.matrix), default=0),
        )

    def EvaluatePolicy(
        self, request: pb.EvaluatePolicyRequest, context: Any
    ) -> pb.EvaluatePolicyResponse:
        compiled = compile_policy(request.policy)
        ok = compiled.satisfied_by(expand_attributes(list(request.attributes)))
        return pb.EvaluatePolicyResponse(satisfied=ok, normal_form=compiled.normal_form)
