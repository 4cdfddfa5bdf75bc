from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
E_DIAL_BACK_ERROR: DialStatus
E_DIAL_ERROR: DialStatus
OK: DialStatus
UNUSED: DialStatus

class DialBack(_message.Message):
    __slots__ = ["nonce"]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class DialBackResponse(_message.Message):
    __slots__ = ["status"]
    class DialBackStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    OK: DialBackResponse.DialBackStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: DialBackResponse.DialBackStatus
    def __init__(self, status: _Optional[_Union[DialBackResponse.DialBackStatus, str]] = ...) -> None: ...

class DialDataRequest(_message.Message):
    __slots__ = ["addrIdx", "numBytes"]
    ADDRIDX_FIELD_NUMBER: _ClassVar[int]
    NUMBYTES_FIELD_NUMBER: _ClassVar[int]
    addrIdx: int
    numBytes: int
    def __init__(self, addrIdx: _Optional[int] = ..., numBytes: _Optional[int] = ...) -> None: ...

class DialDataResponse(_message.Message):
    __slots__ = ["data"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DialRequest(_message.Message):
    __slots__ = ["addrs", "nonce"]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    nonce: int
    def __init__(self, addrs: _Optional[_Iterable[bytes]] = ..., nonce: _Optional[int] = ...) -> None: ...

class DialResponse(_message.Message):
    __slots__ = ["addrIdx", "dialStatus", "status"]
    class ResponseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    ADDRIDX_FIELD_NUMBER: _ClassVar[int]
    DIALSTATUS_FIELD_NUMBER: _ClassVar[int]
    E_DIAL_REFUSED: DialResponse.ResponseStatus
    E_INTERNAL_ERROR: DialResponse.ResponseStatus
    E_REQUEST_REJECTED: DialResponse.ResponseStatus
    OK: DialResponse.ResponseStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    addrIdx: int
    dialStatus: DialStatus
    status: DialResponse.ResponseStatus
    def __init__(self, status: _Optional[_Union[DialResponse.ResponseStatus, str]] = ..., addrIdx: _Optional[int] = ..., dialStatus: _Optional[_Union[DialStatus, str]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ["dialDataRequest", "dialDataResponse", "dialRequest", "dialResponse"]
    DIALDATAREQUEST_FIELD_NUMBER: _ClassVar[int]
    DIALDATARESPONSE_FIELD_NUMBER: _ClassVar[int]
    DIALREQUEST_FIELD_NUMBER: _ClassVar[int]
    DIALRESPONSE_FIELD_NUMBER: _ClassVar[int]
    dialDataRequest: DialDataRequest
    dialDataResponse: DialDataResponse
    dialRequest: DialRequest
    dialResponse: DialResponse
    def __init__(self, dialRequest: _Optional[_Union[DialRequest, _Mapping]] = ..., dialResponse: _Optional[_Union[DialResponse, _Mapping]] = ..., dialDataRequest: _Optional[_Union[DialDataRequest, _Mapping]] = ..., dialDataResponse: _Optional[_Union[DialDataResponse, _Mapping]] = ...) -> None: ...

class DialStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
