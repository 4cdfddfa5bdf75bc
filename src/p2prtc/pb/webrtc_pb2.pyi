from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ["flag", "message"]
    class Flag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    FIN: Message.Flag
    FIN_ACK: Message.Flag
    FLAG_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESET_STREAM: Message.Flag
    STOP_SENDING: Message.Flag
    flag: Message.Flag
    message: bytes
    def __init__(self, flag: _Optional[_Union[Message.Flag, str]] = ..., message: _Optional[bytes] = ...) -> None: ...

class SignalingMessage(_message.Message):
    __slots__ = ["data", "type"]
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    DATA_FIELD_NUMBER: _ClassVar[int]
    ICE_CANDIDATE: SignalingMessage.Type
    SDP_ANSWER: SignalingMessage.Type
    SDP_OFFER: SignalingMessage.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    data: str
    type: SignalingMessage.Type
    def __init__(self, type: _Optional[_Union[SignalingMessage.Type, str]] = ..., data: _Optional[str] = ...) -> None: ...
