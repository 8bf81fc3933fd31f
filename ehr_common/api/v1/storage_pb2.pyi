from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnchorStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANCHOR_STATUS_UNSPECIFIED: _ClassVar[AnchorStatus]
    ANCHOR_STATUS_PENDING: _ClassVar[AnchorStatus]
    ANCHOR_STATUS_ANCHORED: _ClassVar[AnchorStatus]
ANCHOR_STATUS_UNSPECIFIED: AnchorStatus
ANCHOR_STATUS_PENDING: AnchorStatus
ANCHOR_STATUS_ANCHORED: AnchorStatus

class WindowKey(_message.Message):
    __slots__ = ("window_id", "patient_id", "device_id", "envelope")
    WINDOW_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    window_id: str
    patient_id: str
    device_id: str
    envelope: bytes
    def __init__(self, window_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., device_id: _Optional[str] = ..., envelope: _Optional[bytes] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("idempotency_key", "record_type", "sealed")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    record_type: str
    sealed: bytes
    def __init__(self, idempotency_key: _Optional[str] = ..., record_type: _Optional[str] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class SegmentItem(_message.Message):
    __slots__ = ("window", "segment")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    window: WindowKey
    segment: Segment
    def __init__(self, window: _Optional[_Union[WindowKey, _Mapping]] = ..., segment: _Optional[_Union[Segment, _Mapping]] = ...) -> None: ...

class SegmentWrite(_message.Message):
    __slots__ = ("window", "segment", "items")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    window: WindowKey
    segment: Segment
    items: _containers.RepeatedCompositeFieldContainer[SegmentItem]
    def __init__(self, window: _Optional[_Union[WindowKey, _Mapping]] = ..., segment: _Optional[_Union[Segment, _Mapping]] = ..., items: _Optional[_Iterable[_Union[SegmentItem, _Mapping]]] = ...) -> None: ...

class WriteReceipt(_message.Message):
    __slots__ = ("key", "record_id", "duplicate")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    key: str
    record_id: str
    duplicate: bool
    def __init__(self, key: _Optional[str] = ..., record_id: _Optional[str] = ..., duplicate: bool = ...) -> None: ...

class WriteSegmentsResponse(_message.Message):
    __slots__ = ("receipts",)
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[WriteReceipt]
    def __init__(self, receipts: _Optional[_Iterable[_Union[WriteReceipt, _Mapping]]] = ...) -> None: ...

class FetchSegmentsRequest(_message.Message):
    __slots__ = ("patient_id", "since", "until", "limit")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, patient_id: _Optional[str] = ..., since: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class FetchedItem(_message.Message):
    __slots__ = ("envelope", "metadata", "receipt", "window_record_id")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    metadata: RecordMetadata
    receipt: Receipt
    window_record_id: str
    def __init__(self, envelope: _Optional[bytes] = ..., metadata: _Optional[_Union[RecordMetadata, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., window_record_id: _Optional[str] = ...) -> None: ...

class PlainContent(_message.Message):
    __slots__ = ("payload", "policy")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    policy: str
    def __init__(self, payload: _Optional[bytes] = ..., policy: _Optional[str] = ...) -> None: ...

class PutRecordRequest(_message.Message):
    __slots__ = ("patient_id", "record_type", "author", "envelope", "plain", "idempotency_key")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PLAIN_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    record_type: str
    author: str
    envelope: bytes
    plain: PlainContent
    idempotency_key: str
    def __init__(self, patient_id: _Optional[str] = ..., record_type: _Optional[str] = ..., author: _Optional[str] = ..., envelope: _Optional[bytes] = ..., plain: _Optional[_Union[PlainContent, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class PutRecordResponse(_message.Message):
    __slots__ = ("record_id", "receipt", "duplicate")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    receipt: Receipt
    duplicate: bool
    def __init__(self, record_id: _Optional[str] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., duplicate: bool = ...) -> None: ...

class RecordMetadata(_message.Message):
    __slots__ = ("record_id", "patient_id", "record_type", "author", "created_at", "policy", "size", "content_sha256")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    patient_id: str
    record_type: str
    author: str
    created_at: _timestamp_pb2.Timestamp
    policy: str
    size: int
    content_sha256: bytes
    def __init__(self, record_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., record_type: _Optional[str] = ..., author: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[str] = ..., size: _Optional[int] = ..., content_sha256: _Optional[bytes] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("record_id", "status", "leaf_hash", "batch_id", "leaf_index", "tree_size", "inclusion_proof", "merkle_root", "tx_id", "block", "accepted_at", "anchor_deadline", "signature", "service_key_id", "instance_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    status: AnchorStatus
    leaf_hash: bytes
    batch_id: str
    leaf_index: int
    tree_size: int
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    merkle_root: bytes
    tx_id: str
    block: int
    accepted_at: _timestamp_pb2.Timestamp
    anchor_deadline: _timestamp_pb2.Timestamp
    signature: bytes
    service_key_id: str
    instance_id: str
    def __init__(self, record_id: _Optional[str] = ..., status: _Optional[_Union[AnchorStatus, str]] = ..., leaf_hash: _Optional[bytes] = ..., batch_id: _Optional[str] = ..., leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., merkle_root: _Optional[bytes] = ..., tx_id: _Optional[str] = ..., block: _Optional[int] = ..., accepted_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., anchor_deadline: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., signature: _Optional[bytes] = ..., service_key_id: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class GetRecordResponse(_message.Message):
    __slots__ = ("envelope", "metadata", "receipt")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    metadata: RecordMetadata
    receipt: Receipt
    def __init__(self, envelope: _Optional[bytes] = ..., metadata: _Optional[_Union[RecordMetadata, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class ListRecordsRequest(_message.Message):
    __slots__ = ("patient_id", "page_size", "page_token")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    page_size: int
    page_token: str
    def __init__(self, patient_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RecordMetadata]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[RecordMetadata, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetReceiptRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class VerifyRecordsRequest(_message.Message):
    __slots__ = ("all", "patient_id", "batch_id")
    ALL_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    all: bool
    patient_id: str
    batch_id: str
    def __init__(self, all: bool = ..., patient_id: _Optional[str] = ..., batch_id: _Optional[str] = ...) -> None: ...

class IntegrityProblem(_message.Message):
    __slots__ = ("record_id", "batch_id", "detail")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    batch_id: str
    detail: str
    def __init__(self, record_id: _Optional[str] = ..., batch_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class VerifyRecordsResponse(_message.Message):
    __slots__ = ("checked", "passed", "pending", "failed_record_ids", "seconds", "problems", "lost_anchors", "root_mismatches", "missing_on_ledger", "missing_in_index", "set_aside_batches", "ledger_chain")
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    FAILED_RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    LOST_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    ROOT_MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    MISSING_ON_LEDGER_FIELD_NUMBER: _ClassVar[int]
    MISSING_IN_INDEX_FIELD_NUMBER: _ClassVar[int]
    SET_ASIDE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    LEDGER_CHAIN_FIELD_NUMBER: _ClassVar[int]
    checked: int
    passed: int
    pending: int
    failed_record_ids: _containers.RepeatedScalarFieldContainer[str]
    seconds: float
    problems: _containers.RepeatedCompositeFieldContainer[IntegrityProblem]
    lost_anchors: _containers.RepeatedScalarFieldContainer[str]
    root_mismatches: _containers.RepeatedScalarFieldContainer[str]
    missing_on_ledger: _containers.RepeatedScalarFieldContainer[str]
    missing_in_index: _containers.RepeatedScalarFieldContainer[str]
    set_aside_batches: _containers.RepeatedScalarFieldContainer[str]
    ledger_chain: str
    def __init__(self, checked: _Optional[int] = ..., passed: _Optional[int] = ..., pending: _Optional[int] = ..., failed_record_ids: _Optional[_Iterable[str]] = ..., seconds: _Optional[float] = ..., problems: _Optional[_Iterable[_Union[IntegrityProblem, _Mapping]]] = ..., lost_anchors: _Optional[_Iterable[str]] = ..., root_mismatches: _Optional[_Iterable[str]] = ..., missing_on_ledger: _Optional[_Iterable[str]] = ..., missing_in_index: _Optional[_Iterable[str]] = ..., set_aside_batches: _Optional[_Iterable[str]] = ..., ledger_chain: _Optional[str] = ...) -> None: ...

class GrantConsentRequest(_message.Message):
    __slots__ = ("patient_id", "subject_id", "expires_at")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    subject_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, patient_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("patient_id", "subject_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    subject_id: str
    def __init__(self, patient_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class ConsentResponse(_message.Message):
    __slots__ = ("tx_id",)
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    tx_id: str
    def __init__(self, tx_id: _Optional[str] = ...) -> None: ...

class GetAuditTrailRequest(_message.Message):
    __slots__ = ("record_id", "subject_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    subject_id: str
    def __init__(self, record_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("kind", "record_id", "patient_id", "subject_id", "at", "tx_id", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    record_id: str
    patient_id: str
    subject_id: str
    at: _timestamp_pb2.Timestamp
    tx_id: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., record_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., tx_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GetAuditTrailResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...

class FlushAnchorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FlushAnchorsResponse(_message.Message):
    __slots__ = ("batches", "records", "set_aside_batches")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SET_ASIDE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    records: int
    set_aside_batches: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batches: _Optional[int] = ..., records: _Optional[int] = ..., set_aside_batches: _Optional[_Iterable[str]] = ...) -> None: ...

class GetServiceKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceKey(_message.Message):
    __slots__ = ("ed25519_public_key", "key_id", "instance_id")
    ED25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ed25519_public_key: bytes
    key_id: str
    instance_id: str
    def __init__(self, ed25519_public_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class GetAnchoringStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AnchoringStatus(_message.Message):
    __slots__ = ("instance_id", "pending_records", "oldest_pending_age_s", "anchored_through_seq", "set_aside_batches", "ledger_healthy", "anchor_deadline_s")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PENDING_RECORDS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_AGE_S_FIELD_NUMBER: _ClassVar[int]
    ANCHORED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    SET_ASIDE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    LEDGER_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    pending_records: int
    oldest_pending_age_s: float
    anchored_through_seq: int
    set_aside_batches: _containers.RepeatedScalarFieldContainer[str]
    ledger_healthy: bool
    anchor_deadline_s: float
    def __init__(self, instance_id: _Optional[str] = ..., pending_records: _Optional[int] = ..., oldest_pending_age_s: _Optional[float] = ..., anchored_through_seq: _Optional[int] = ..., set_aside_batches: _Optional[_Iterable[str]] = ..., ledger_healthy: bool = ..., anchor_deadline_s: _Optional[float] = ...) -> None: ...

class AssignDeviceRequest(_message.Message):
    __slots__ = ("patient_id", "device_id", "expires_at")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    device_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, patient_id: _Optional[str] = ..., device_id: _Optional[str] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UnassignDeviceRequest(_message.Message):
    __slots__ = ("patient_id", "device_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    device_id: str
    def __init__(self, patient_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class AssignmentResponse(_message.Message):
    __slots__ = ("tx_id",)
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    tx_id: str
    def __init__(self, tx_id: _Optional[str] = ...) -> None: ...

class ListAssignmentsRequest(_message.Message):
    __slots__ = ("patient_id", "device_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    device_id: str
    def __init__(self, patient_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class AssignmentChange(_message.Message):
    __slots__ = ("patient_id", "device_id", "assigned", "expires_at", "by", "at", "tx_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    device_id: str
    assigned: bool
    expires_at: _timestamp_pb2.Timestamp
    by: str
    at: _timestamp_pb2.Timestamp
    tx_id: str
    def __init__(self, patient_id: _Optional[str] = ..., device_id: _Optional[str] = ..., assigned: bool = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., by: _Optional[str] = ..., at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., tx_id: _Optional[str] = ...) -> None: ...

class ListAssignmentsResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[AssignmentChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[AssignmentChange, _Mapping]]] = ...) -> None: ...
