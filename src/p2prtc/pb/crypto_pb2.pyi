from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
ECDSA: KeyType
Ed25519: KeyType
RSA: KeyType
Secp256k1: KeyType

class PrivateKey(_message.Message):
    __slots__ = ["Data", "Type"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    Data: bytes
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: KeyType
    def __init__(self, Type: _Optional[_Union[KeyType, str]] = ..., Data: _Optional[bytes] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ["Data", "Type"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    Data: bytes
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: KeyType
    def __init__(self, Type: _Optional[_Union[KeyType, str]] = ..., Data: _Optional[bytes] = ...) -> None: ...

class KeyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
