from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ["closerPeers", "clusterLevelRaw", "key", "providerPeers", "record", "type"]
    class ConnectionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    class Peer(_message.Message):
        __slots__ = ["addrs", "connection", "id"]
        ADDRS_FIELD_NUMBER: _ClassVar[int]
        CONNECTION_FIELD_NUMBER: _ClassVar[int]
        ID_FIELD_NUMBER: _ClassVar[int]
        addrs: _containers.RepeatedScalarFieldContainer[bytes]
        connection: Message.ConnectionType
        id: bytes
        def __init__(self, id: _Optional[bytes] = ..., addrs: _Optional[_Iterable[bytes]] = ..., connection: _Optional[_Union[Message.ConnectionType, str]] = ...) -> None: ...
    ADD_PROVIDER: Message.MessageType
    CANNOT_CONNECT: Message.ConnectionType
    CAN_CONNECT: Message.ConnectionType
    CLOSERPEERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTERLEVELRAW_FIELD_NUMBER: _ClassVar[int]
    CONNECTED: Message.ConnectionType
    FIND_NODE: Message.MessageType
    GET_PROVIDERS: Message.MessageType
    GET_VALUE: Message.MessageType
    KEY_FIELD_NUMBER: _ClassVar[int]
    NOT_CONNECTED: Message.ConnectionType
    PING: Message.MessageType
    PROVIDERPEERS_FIELD_NUMBER: _ClassVar[int]
    PUT_VALUE: Message.MessageType
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    closerPeers: _containers.RepeatedCompositeFieldContainer[Message.Peer]
    clusterLevelRaw: int
    key: bytes
    providerPeers: _containers.RepeatedCompositeFieldContainer[Message.Peer]
    record: Record
    type: int
    def __init__(self, type: _Optional[int] = ..., clusterLevelRaw: _Optional[int] = ..., key: _Optional[bytes] = ..., record: _Optional[_Union[Record, _Mapping]] = ..., closerPeers: _Optional[_Iterable[_Union[Message.Peer, _Mapping]]] = ..., providerPeers: _Optional[_Iterable[_Union[Message.Peer, _Mapping]]] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ["key", "timeReceived", "value"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMERECEIVED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    timeReceived: str
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., timeReceived: _Optional[str] = ...) -> None: ...
