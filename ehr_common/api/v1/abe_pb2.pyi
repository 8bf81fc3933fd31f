from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetPublicParamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPublicParamsResponse(_message.Message):
    __slots__ = ("public_params", "scheme", "authority_id")
    PUBLIC_PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    public_params: bytes
    scheme: str
    authority_id: str
    def __init__(self, public_params: _Optional[bytes] = ..., scheme: _Optional[str] = ..., authority_id: _Optional[str] = ...) -> None: ...

class IssueUserKeyRequest(_message.Message):
    __slots__ = ("subject_id", "attributes")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    attributes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, subject_id: _Optional[str] = ..., attributes: _Optional[_Iterable[str]] = ...) -> None: ...

class IssueUserKeyResponse(_message.Message):
    __slots__ = ("user_key", "key_id", "attribute_set_hmac")
    USER_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_SET_HMAC_FIELD_NUMBER: _ClassVar[int]
    user_key: bytes
    key_id: str
    attribute_set_hmac: str
    def __init__(self, user_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., attribute_set_hmac: _Optional[str] = ...) -> None: ...

class EncryptRequest(_message.Message):
    __slots__ = ("policy", "plaintext", "context")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    policy: str
    plaintext: bytes
    context: bytes
    def __init__(self, policy: _Optional[str] = ..., plaintext: _Optional[bytes] = ..., context: _Optional[bytes] = ...) -> None: ...

class EncryptResponse(_message.Message):
    __slots__ = ("envelope", "policy_normal_form")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_NORMAL_FORM_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    policy_normal_form: str
    def __init__(self, envelope: _Optional[bytes] = ..., policy_normal_form: _Optional[str] = ...) -> None: ...

class CheckPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: str
    def __init__(self, policy: _Optional[str] = ...) -> None: ...

class CheckPolicyResponse(_message.Message):
    __slots__ = ("normal_form", "attributes", "span_program_rows", "span_program_columns")
    NORMAL_FORM_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SPAN_PROGRAM_ROWS_FIELD_NUMBER: _ClassVar[int]
    SPAN_PROGRAM_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    normal_form: str
    attributes: _containers.RepeatedScalarFieldContainer[str]
    span_program_rows: int
    span_program_columns: int
    def __init__(self, normal_form: _Optional[str] = ..., attributes: _Optional[_Iterable[str]] = ..., span_program_rows: _Optional[int] = ..., span_program_columns: _Optional[int] = ...) -> None: ...

class EvaluatePolicyRequest(_message.Message):
    __slots__ = ("policy", "attributes")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    policy: str
    attributes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy: _Optional[str] = ..., attributes: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("satisfied", "normal_form")
    SATISFIED_FIELD_NUMBER: _ClassVar[int]
    NORMAL_FORM_FIELD_NUMBER: _ClassVar[int]
    satisfied: bool
    normal_form: str
    def __init__(self, satisfied: bool = ..., normal_form: _Optional[str] = ...) -> None: ...
