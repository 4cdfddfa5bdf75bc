from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TurnCredentials(_message.Message):
    __slots__ = ["password", "ttl", "urls", "username"]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    URLS_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    password: str
    ttl: int
    urls: _containers.RepeatedScalarFieldContainer[str]
    username: str
    def __init__(self, urls: _Optional[_Iterable[str]] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...

class TurnCredentialsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...
