from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObjectKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECT_KIND_UNSPECIFIED: _ClassVar[ObjectKind]
    OBJECT_KIND_PUBLIC_PARAMS: _ClassVar[ObjectKind]
    OBJECT_KIND_MASTER_KEY: _ClassVar[ObjectKind]
    OBJECT_KIND_SEALED_MASTER_KEY: _ClassVar[ObjectKind]
    OBJECT_KIND_USER_KEY: _ClassVar[ObjectKind]
    OBJECT_KIND_ENVELOPE: _ClassVar[ObjectKind]
    OBJECT_KIND_SEGMENT: _ClassVar[ObjectKind]
    OBJECT_KIND_MA_AUTHORITY_PUBLIC_KEY: _ClassVar[ObjectKind]
    OBJECT_KIND_MA_AUTHORITY_SECRET_KEY: _ClassVar[ObjectKind]
    OBJECT_KIND_MA_USER_KEY: _ClassVar[ObjectKind]
OBJECT_KIND_UNSPECIFIED: ObjectKind
OBJECT_KIND_PUBLIC_PARAMS: ObjectKind
OBJECT_KIND_MASTER_KEY: ObjectKind
OBJECT_KIND_SEALED_MASTER_KEY: ObjectKind
OBJECT_KIND_USER_KEY: ObjectKind
OBJECT_KIND_ENVELOPE: ObjectKind
OBJECT_KIND_SEGMENT: ObjectKind
OBJECT_KIND_MA_AUTHORITY_PUBLIC_KEY: ObjectKind
OBJECT_KIND_MA_AUTHORITY_SECRET_KEY: ObjectKind
OBJECT_KIND_MA_USER_KEY: ObjectKind

class PublicParams(_message.Message):
    __slots__ = ("kind", "version", "scheme", "h1", "h2", "t1", "t2")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    H1_FIELD_NUMBER: _ClassVar[int]
    H2_FIELD_NUMBER: _ClassVar[int]
    T1_FIELD_NUMBER: _ClassVar[int]
    T2_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    h1: bytes
    h2: bytes
    t1: bytes
    t2: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., h1: _Optional[bytes] = ..., h2: _Optional[bytes] = ..., t1: _Optional[bytes] = ..., t2: _Optional[bytes] = ...) -> None: ...

class MasterKey(_message.Message):
    __slots__ = ("kind", "version", "scheme", "authority_id", "a1", "a2", "b1", "b2", "g_d1", "g_d2", "g_d3")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    A1_FIELD_NUMBER: _ClassVar[int]
    A2_FIELD_NUMBER: _ClassVar[int]
    B1_FIELD_NUMBER: _ClassVar[int]
    B2_FIELD_NUMBER: _ClassVar[int]
    G_D1_FIELD_NUMBER: _ClassVar[int]
    G_D2_FIELD_NUMBER: _ClassVar[int]
    G_D3_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    authority_id: str
    a1: bytes
    a2: bytes
    b1: bytes
    b2: bytes
    g_d1: bytes
    g_d2: bytes
    g_d3: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., authority_id: _Optional[str] = ..., a1: _Optional[bytes] = ..., a2: _Optional[bytes] = ..., b1: _Optional[bytes] = ..., b2: _Optional[bytes] = ..., g_d1: _Optional[bytes] = ..., g_d2: _Optional[bytes] = ..., g_d3: _Optional[bytes] = ...) -> None: ...

class SealedMasterKey(_message.Message):
    __slots__ = ("kind", "version", "authority_id", "kdf", "salt", "scrypt_log2_n", "scrypt_r", "scrypt_p", "nonce", "ciphertext")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    KDF_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_LOG2_N_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_R_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_P_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    authority_id: str
    kdf: str
    salt: bytes
    scrypt_log2_n: int
    scrypt_r: int
    scrypt_p: int
    nonce: bytes
    ciphertext: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., authority_id: _Optional[str] = ..., kdf: _Optional[str] = ..., salt: _Optional[bytes] = ..., scrypt_log2_n: _Optional[int] = ..., scrypt_r: _Optional[int] = ..., scrypt_p: _Optional[int] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class AttributeKeyPart(_message.Message):
    __slots__ = ("label", "sk1", "sk2", "sk3")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SK1_FIELD_NUMBER: _ClassVar[int]
    SK2_FIELD_NUMBER: _ClassVar[int]
    SK3_FIELD_NUMBER: _ClassVar[int]
    label: str
    sk1: bytes
    sk2: bytes
    sk3: bytes
    def __init__(self, label: _Optional[str] = ..., sk1: _Optional[bytes] = ..., sk2: _Optional[bytes] = ..., sk3: _Optional[bytes] = ...) -> None: ...

class UserKey(_message.Message):
    __slots__ = ("kind", "version", "scheme", "authority_id", "subject_id", "key_id", "attributes", "sk0", "parts", "sk_prime", "public_params")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SK0_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    SK_PRIME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_PARAMS_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    authority_id: str
    subject_id: str
    key_id: str
    attributes: _containers.RepeatedScalarFieldContainer[str]
    sk0: _containers.RepeatedScalarFieldContainer[bytes]
    parts: _containers.RepeatedCompositeFieldContainer[AttributeKeyPart]
    sk_prime: _containers.RepeatedScalarFieldContainer[bytes]
    public_params: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., authority_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., key_id: _Optional[str] = ..., attributes: _Optional[_Iterable[str]] = ..., sk0: _Optional[_Iterable[bytes]] = ..., parts: _Optional[_Iterable[_Union[AttributeKeyPart, _Mapping]]] = ..., sk_prime: _Optional[_Iterable[bytes]] = ..., public_params: _Optional[bytes] = ...) -> None: ...

class CiphertextRow(_message.Message):
    __slots__ = ("ct1", "ct2", "ct3")
    CT1_FIELD_NUMBER: _ClassVar[int]
    CT2_FIELD_NUMBER: _ClassVar[int]
    CT3_FIELD_NUMBER: _ClassVar[int]
    ct1: bytes
    ct2: bytes
    ct3: bytes
    def __init__(self, ct1: _Optional[bytes] = ..., ct2: _Optional[bytes] = ..., ct3: _Optional[bytes] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("kind", "version", "scheme", "authority_id", "policy", "ct0", "rows", "nonce", "ciphertext", "key_commitment", "ma_rows", "ma_authorities")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CT0_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    MA_ROWS_FIELD_NUMBER: _ClassVar[int]
    MA_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    authority_id: str
    policy: str
    ct0: _containers.RepeatedScalarFieldContainer[bytes]
    rows: _containers.RepeatedCompositeFieldContainer[CiphertextRow]
    nonce: bytes
    ciphertext: bytes
    key_commitment: bytes
    ma_rows: _containers.RepeatedCompositeFieldContainer[MaCiphertextRow]
    ma_authorities: _containers.RepeatedCompositeFieldContainer[MaAuthorityRef]
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., authority_id: _Optional[str] = ..., policy: _Optional[str] = ..., ct0: _Optional[_Iterable[bytes]] = ..., rows: _Optional[_Iterable[_Union[CiphertextRow, _Mapping]]] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., key_commitment: _Optional[bytes] = ..., ma_rows: _Optional[_Iterable[_Union[MaCiphertextRow, _Mapping]]] = ..., ma_authorities: _Optional[_Iterable[_Union[MaAuthorityRef, _Mapping]]] = ...) -> None: ...

class MaAuthorityPublicKey(_message.Message):
    __slots__ = ("kind", "version", "scheme", "authority", "e_alpha", "g_y")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    E_ALPHA_FIELD_NUMBER: _ClassVar[int]
    G_Y_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    authority: str
    e_alpha: bytes
    g_y: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., authority: _Optional[str] = ..., e_alpha: _Optional[bytes] = ..., g_y: _Optional[bytes] = ...) -> None: ...

class MaAuthoritySecretKey(_message.Message):
    __slots__ = ("kind", "version", "scheme", "authority", "alpha", "y", "public_key_sha256")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    authority: str
    alpha: bytes
    y: bytes
    public_key_sha256: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., authority: _Optional[str] = ..., alpha: _Optional[bytes] = ..., y: _Optional[bytes] = ..., public_key_sha256: _Optional[bytes] = ...) -> None: ...

class MaAttributeKey(_message.Message):
    __slots__ = ("label", "k", "kp")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    KP_FIELD_NUMBER: _ClassVar[int]
    label: str
    k: bytes
    kp: bytes
    def __init__(self, label: _Optional[str] = ..., k: _Optional[bytes] = ..., kp: _Optional[bytes] = ...) -> None: ...

class MaUserKey(_message.Message):
    __slots__ = ("kind", "version", "scheme", "authority", "gid", "key_id", "attributes", "parts", "authority_key_sha256")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    scheme: str
    authority: str
    gid: str
    key_id: str
    attributes: _containers.RepeatedScalarFieldContainer[str]
    parts: _containers.RepeatedCompositeFieldContainer[MaAttributeKey]
    authority_key_sha256: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., scheme: _Optional[str] = ..., authority: _Optional[str] = ..., gid: _Optional[str] = ..., key_id: _Optional[str] = ..., attributes: _Optional[_Iterable[str]] = ..., parts: _Optional[_Iterable[_Union[MaAttributeKey, _Mapping]]] = ..., authority_key_sha256: _Optional[bytes] = ...) -> None: ...

class MaCiphertextRow(_message.Message):
    __slots__ = ("c1", "c2", "c3", "c4")
    C1_FIELD_NUMBER: _ClassVar[int]
    C2_FIELD_NUMBER: _ClassVar[int]
    C3_FIELD_NUMBER: _ClassVar[int]
    C4_FIELD_NUMBER: _ClassVar[int]
    c1: bytes
    c2: bytes
    c3: bytes
    c4: bytes
    def __init__(self, c1: _Optional[bytes] = ..., c2: _Optional[bytes] = ..., c3: _Optional[bytes] = ..., c4: _Optional[bytes] = ...) -> None: ...

class MaAuthorityRef(_message.Message):
    __slots__ = ("authority", "public_key_sha256")
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    authority: str
    public_key_sha256: bytes
    def __init__(self, authority: _Optional[str] = ..., public_key_sha256: _Optional[bytes] = ...) -> None: ...

class SegmentEnvelope(_message.Message):
    __slots__ = ("kind", "version", "window_id", "patient_id", "device_id", "device_type", "first_seq", "last_seq", "first_time_ms", "last_time_ms", "count", "nonce", "ciphertext")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    version: int
    window_id: str
    patient_id: str
    device_id: str
    device_type: str
    first_seq: int
    last_seq: int
    first_time_ms: int
    last_time_ms: int
    count: int
    nonce: bytes
    ciphertext: bytes
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., version: _Optional[int] = ..., window_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., device_id: _Optional[str] = ..., device_type: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., first_time_ms: _Optional[int] = ..., last_time_ms: _Optional[int] = ..., count: _Optional[int] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...
