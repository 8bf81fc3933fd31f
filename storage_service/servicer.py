"""StorageService over gRPC: translation between protobuf and `StorageCore` only.

Errors are raised as typed EhrAbeError and mapped to status codes by
`ehr_common.grpc_errors.ErrorMappingInterceptor`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ehr_common.api.v1 import storage_pb2 as pb
from ehr_common.api.v1 import storage_pb2_grpc as pb_grpc
from ehr_common.errors import DeadlineExceeded, InvalidArgument
from ehr_common.identity import Authenticator
from storage_service.ledger.base import Caller
from storage_service.records import RecordMeta
from storage_service.service import (
    MAX_STREAM_ITEMS,
    Receipt,
    SegmentItem,
    StorageCore,
    WindowItem,
)
from storage_service.stream_slots import StreamSlots

log = logging.getLogger(__name__)


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


def meta_to_pb(m: RecordMeta) -> pb.RecordMetadata:
    return pb.RecordMetadata(
        record_id=m.record_id,
        patient_id=m.patient_id,
        record_type=m.record_type,
        author=m.author,
        created_at=_ts(m.created_at),
        policy=m.policy,
        size=m.size,
        content_sha256=m.content_sha256,
    )


def receipt_to_pb(r: Receipt) -> pb.Receipt:
    out = pb.Receipt(
        record_id=r.record_id,
        status=pb.ANCHOR_STATUS_ANCHORED if r.anchored else pb.ANCHOR_STATUS_PENDING,
        leaf_hash=r.leaf_hash,
        batch_id=r.batch_id,
        leaf_index=r.leaf_index,
        tree_size=r.tree_size,
        inclusion_proof=list(r.inclusion_proof),
        merkle_root=r.merkle_root,
        tx_id=r.tx_id,
        block=r.block,
        signature=r.signature,
        service_key_id=r.key_id,
        instance_id=r.instance_id,
    )
    if r.accepted_at is not None:
        out.accepted_at.CopyFrom(_ts(r.accepted_at))
    if r.anchor_deadline is not None:
        out.anchor_deadline.CopyFrom(_ts(r.anchor_deadline))
    return out


#: How long one WriteSegments call may take to send its items (the edge sends at
#: most a few MiB per call; its own deadline is 30 s).
MAX_STREAM_SECONDS = 120.0
#: Open streams (WriteSegments and FetchSegments together) one caller may hold; an
#: edge's send_streams (1-4) fits.
MAX_STREAMS_PER_CALLER = 4


def _cut_off(context: Any, subject: str, fired: threading.Event) -> None:
    fired.set()
    log.warning(
        "WriteSegments from %s cancelled: stream open over %s s", subject, MAX_STREAM_SECONDS
    )
    context.cancel()


#: A WriteSegments message larger than this carries one item (a big segment or
#: window key), never a batch: a batch is parsed into one object per item, and
#: 2-byte empty items made a 64 MiB message some 32 million objects (about 1.5 GB).
#: The edge packs batches of at most 1 MiB of payload.
BATCH_MESSAGE_MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class OversizedBatch:
    """A WriteSegments message over BATCH_MESSAGE_MAX_BYTES with more than one item."""

    size: int


def parse_segment_write(raw: bytes) -> pb.SegmentWrite | pb.SegmentItem | OversizedBatch:
    """WriteSegments' request parser (installed with RequestParsers): a message up to
    BATCH_MESSAGE_MAX_BYTES as a SegmentWrite; a larger one as a single item, with
    anything else in it (`items`) refused unparsed."""
    if len(raw) <= BATCH_MESSAGE_MAX_BYTES:
        return pb.SegmentWrite.FromString(raw)
    # SegmentItem has SegmentWrite's item fields and not `items`, which it keeps as
    # unknown bytes instead of expanding; whatever it did not know is then dropped,
    # and a size that changed says there was something besides the one item.
    one = pb.SegmentItem.FromString(raw)
    one.DiscardUnknownFields()
    if one.ByteSize() != len(raw):
        return OversizedBatch(len(raw))
    return one


#: full method name -> request parser, for RequestParsers
REQUEST_PARSERS = {
    f"/{pb.DESCRIPTOR.services_by_name['StorageService'].full_name}/WriteSegments": (
        parse_segment_write
    ),
}


def _stream_item(msg: pb.SegmentWrite | pb.SegmentItem) -> WindowItem | SegmentItem:
    which = msg.WhichOneof("item")
    if which == "window":
        w = msg.window
        return WindowItem(w.window_id, w.patient_id, w.device_id, w.envelope)
    if which == "segment":
        g = msg.segment
        return SegmentItem(g.idempotency_key, g.record_type, g.sealed)
    raise InvalidArgument("a WriteSegments item needs a window or a segment")


class StorageServicer(pb_grpc.StorageServiceServicer):  # type: ignore[misc]
    def __init__(self, core: StorageCore, authenticator: Authenticator, *, max_streams: int = 16):
        """max_streams: open streams of all callers together; keep it below the
        server's RPC thread count so that unary calls always find a thread."""
        self.core = core
        self._auth = authenticator
        self._streams = StreamSlots(
            per_caller=min(MAX_STREAMS_PER_CALLER, max_streams), total=max_streams
        )

    def _caller(self, context: Any) -> Caller:
        return self._auth.from_context(context)

    def PutRecord(self, request: pb.PutRecordRequest, context: Any) -> pb.PutRecordResponse:
        caller = self._caller(context)
        which = request.WhichOneof("content")
        result = self.core.put_record(
            caller,
            patient_id=request.patient_id,
            record_type=request.record_type,
            author=request.author,
            envelope=request.envelope if which == "envelope" else None,
            payload=request.plain.payload if which == "plain" else None,
            policy=request.plain.policy if which == "plain" else "",
            idempotency_key=request.idempotency_key,
        )
        return pb.PutRecordResponse(
            record_id=result.meta.record_id,
            receipt=receipt_to_pb(result.receipt),
            duplicate=result.duplicate,
        )

    def GetRecord(self, request: pb.GetRecordRequest, context: Any) -> pb.GetRecordResponse:
        envelope, meta, receipt = self.core.get_record(self._caller(context), request.record_id)
        return pb.GetRecordResponse(
            envelope=envelope, metadata=meta_to_pb(meta), receipt=receipt_to_pb(receipt)
        )

    def ListRecords(self, request: pb.ListRecordsRequest, context: Any) -> pb.ListRecordsResponse:
        records, token = self.core.list_records(
            self._caller(context), request.patient_id, request.page_size, request.page_token
        )
        return pb.ListRecordsResponse(
            records=[meta_to_pb(m) for m in records], next_page_token=token
        )

    def GetReceipt(self, request: pb.GetReceiptRequest, context: Any) -> pb.Receipt:
        return receipt_to_pb(self.core.get_receipt(self._caller(context), request.record_id))

    def VerifyRecords(
        self, request: pb.VerifyRecordsRequest, context: Any
    ) -> pb.VerifyRecordsResponse:
        scope = request.WhichOneof("scope")

        def still_wanted(_done: int, _bytes: int) -> None:
            # Long verifications stop when the caller's deadline passes or it hangs up.
            if not context.is_active():
                raise DeadlineExceeded("VerifyRecords: the caller's deadline passed")

        report = self.core.verify_records(
            self._caller(context),
            patient_id=request.patient_id if scope == "patient_id" else None,
            batch_id=request.batch_id if scope == "batch_id" else None,
            on_progress=still_wanted,
        )
        return pb.VerifyRecordsResponse(
            checked=report.checked,
            passed=report.passed,
            pending=report.pending,
            failed_record_ids=list(report.failed_record_ids),
            seconds=report.seconds,
            problems=[
                pb.IntegrityProblem(record_id=r, batch_id=b, detail=d)
                for r, b, d in report.problems
            ],
            lost_anchors=list(report.lost_anchors),
            root_mismatches=list(report.root_mismatches),
            missing_on_ledger=list(report.missing_on_ledger),
            missing_in_index=list(report.missing_in_index),
            set_aside_batches=list(report.set_aside_batches),
            ledger_chain=report.ledger_chain,
        )

    def GrantConsent(self, request: pb.GrantConsentRequest, context: Any) -> pb.ConsentResponse:
        expires = (
            request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None
        )
        tx = self.core.grant_consent(
            self._caller(context), request.patient_id, request.subject_id, expires
        )
        return pb.ConsentResponse(tx_id=tx)

    def RevokeConsent(self, request: pb.RevokeConsentRequest, context: Any) -> pb.ConsentResponse:
        tx = self.core.revoke_consent(self._caller(context), request.patient_id, request.subject_id)
        return pb.ConsentResponse(tx_id=tx)

    def GetAuditTrail(
        self, request: pb.GetAuditTrailRequest, context: Any
    ) -> pb.GetAuditTrailResponse:
        which = request.WhichOneof("target")
        events = self.core.audit_trail(
            self._caller(context),
            record_id=request.record_id if which == "record_id" else None,
            subject_id=request.subject_id if which == "subject_id" else None,
        )
        return pb.GetAuditTrailResponse(
            events=[
                pb.AuditEvent(
                    kind=e.kind,
                    record_id=e.record_id,
                    patient_id=e.patient_id,
                    subject_id=e.subject_id,
                    at=_ts(e.at),
                    tx_id=e.tx_id,
                    detail=e.detail,
                )
                for e in events
            ]
        )

    def AssignDevice(self, request: pb.AssignDeviceRequest, context: Any) -> pb.AssignmentResponse:
        if not request.HasField("expires_at"):
            raise InvalidArgument("a device assignment needs expires_at")
        tx = self.core.assign_device(
            self._caller(context),
            request.patient_id,
            request.device_id,
            request.expires_at.ToDatetime(tzinfo=UTC),
        )
        return pb.AssignmentResponse(tx_id=tx)

    def UnassignDevice(
        self, request: pb.UnassignDeviceRequest, context: Any
    ) -> pb.AssignmentResponse:
        tx = self.core.unassign_device(self._caller(context), request.patient_id, request.device_id)
        return pb.AssignmentResponse(tx_id=tx)

    def ListAssignments(
        self, request: pb.ListAssignmentsRequest, context: Any
    ) -> pb.ListAssignmentsResponse:
        changes = self.core.assignment_history(
            self._caller(context), request.patient_id, request.device_id
        )
        return pb.ListAssignmentsResponse(
            changes=[
                pb.AssignmentChange(
                    patient_id=c.patient_id,
                    device_id=c.device_id,
                    assigned=c.assigned,
                    expires_at=_ts(c.expires_at) if c.expires_at else None,
                    by=f"{c.by_msp}/{c.by_subject}",
                    at=_ts(c.at),
                    tx_id=c.tx_id,
                )
                for c in changes
            ]
        )

    def FlushAnchors(
        self, request: pb.FlushAnchorsRequest, context: Any
    ) -> pb.FlushAnchorsResponse:
        caller = self._caller(context)
        del caller  # any authenticated caller may ask for pending anchors to be written now
        result = self.core.flush()
        return pb.FlushAnchorsResponse(
            batches=result.batches,
            records=result.records,
            set_aside_batches=list(result.set_aside),
        )

    def GetServiceKey(self, request: pb.GetServiceKeyRequest, context: Any) -> pb.ServiceKey:
        self._caller(context)  # any authenticated caller
        public, key_id, instance = self.core.service_key()
        return pb.ServiceKey(ed25519_public_key=public, key_id=key_id, instance_id=instance)

    def GetAnchoringStatus(
        self, request: pb.GetAnchoringStatusRequest, context: Any
    ) -> pb.AnchoringStatus:
        self._caller(context)  # any authenticated caller
        pending, age, head, set_aside, healthy = self.core.anchoring_status()
        return pb.AnchoringStatus(
            instance_id=self.core.instance_id,
            pending_records=pending,
            oldest_pending_age_s=age,
            anchored_through_seq=head,
            set_aside_batches=list(set_aside),
            ledger_healthy=healthy,
            anchor_deadline_s=self.core.policy.deadline_s,
        )

    def WriteSegments(
        self, request_iterator: Iterator[pb.SegmentWrite], context: Any
    ) -> pb.WriteSegmentsResponse:
        caller = self._caller(context)
        # A stream that never ends would hold one of the server's few RPC threads for
        # good: reading it has a time budget, after which the call is cancelled.
        fired = threading.Event()
        budget = threading.Timer(MAX_STREAM_SECONDS, _cut_off, (context, caller.subject, fired))
        budget.daemon = True

        def items() -> Iterator[WindowItem | SegmentItem]:
            for msg in request_iterator:
                if isinstance(msg, OversizedBatch):
                    raise InvalidArgument(
                        f"a WriteSegments message of {msg.size} bytes carries more than one "
                        f"item: batches of items are at most {BATCH_MESSAGE_MAX_BYTES} bytes"
                    )
                if isinstance(msg, pb.SegmentItem):  # a large message: one item
                    yield _stream_item(msg)
                    continue
                # the message's own item, then its batch (write_segments counts and
                # caps items and bytes over the whole call, however they are packed)
                own = msg.WhichOneof("item") is not None
                if not own and not msg.items:
                    raise InvalidArgument("a WriteSegments message needs a window or a segment")
                if len(msg.items) > MAX_STREAM_ITEMS:
                    raise InvalidArgument(
                        f"more than {MAX_STREAM_ITEMS} items in one WriteSegments message"
                    )
                if own:
                    yield _stream_item(msg)
                for one in msg.items:
                    yield _stream_item(one)
            budget.cancel()  # all read: what is left is this service's own work

        with self._streams.hold(caller.principal, "WriteSegments"):
            budget.start()
            try:
                results = self.core.write_segments(caller, items())
            except grpc.RpcError:
                if fired.is_set():
                    raise DeadlineExceeded(
                        f"WriteSegments: the stream was still open after {MAX_STREAM_SECONDS} s"
                    ) from None
                raise
            finally:
                budget.cancel()
        return pb.WriteSegmentsResponse(
            receipts=[
                pb.WriteReceipt(key=r.key, record_id=r.record_id, duplicate=r.duplicate)
                for r in results
            ]
        )

    def FetchSegments(
        self, request: pb.FetchSegmentsRequest, context: Any
    ) -> Iterator[pb.FetchedItem]:
        since = int(request.since.ToMilliseconds()) if request.HasField("since") else 0
        until = int(request.until.ToMilliseconds()) if request.HasField("until") else 2**62
        caller = self._caller(context)
        # held until the generator ends or is closed (the client went away)
        with self._streams.hold(caller.principal, "FetchSegments"):
            for envelope, meta, receipt, window_rid in self.core.fetch_segments(
                caller, request.patient_id, since, until, request.limit
            ):
                yield pb.FetchedItem(
                    envelope=envelope,
                    metadata=meta_to_pb(meta),
                    receipt=receipt_to_pb(receipt),
                    window_record_id=window_rid,
                )
