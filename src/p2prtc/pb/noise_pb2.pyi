from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NoiseExtensions(_message.Message):
    __slots__ = ["stream_muxers", "webtransport_certhashes"]
    STREAM_MUXERS_FIELD_NUMBER: _ClassVar[int]
    WEBTRANSPORT_CERTHASHES_FIELD_NUMBER: _ClassVar[int]
    stream_muxers: _containers.RepeatedScalarFieldContainer[str]
    webtransport_certhashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, webtransport_certhashes: _Optional[_Iterable[bytes]] = ..., stream_muxers: _Optional[_Iterable[str]] = ...) -> None: ...

class NoiseHandshakePayload(_message.Message):
    __slots__ = ["extensions", "identity_key", "identity_sig"]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SIG_FIELD_NUMBER: _ClassVar[int]
    extensions: NoiseExtensions
    identity_key: bytes
    identity_sig: bytes
    def __init__(self, identity_key: _Optional[bytes] = ..., identity_sig: _Optional[bytes] = ..., extensions: _Optional[_Union[NoiseExtensions, _Mapping]] = ...) -> None: ...
