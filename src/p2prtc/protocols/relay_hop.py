"""Circuit relay v2 wire messages (specs: relay/circuit-v2.md), shared by the relay server and
the relay client: protocol ids, status codes, reading/writing hop and stop messages, vouchers."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from ..envelope import Envelope
from ..errors import ProtocolError
from ..identity import Identity, PeerId
from ..pb import circuit_pb2
from ..streams import ByteStream, read_length_prefixed, write_length_prefixed
from ..wire.varint import encode_uvarint

HOP = "/libp2p/circuit/relay/0.2.0/hop"
STOP = "/libp2p/circuit/relay/0.2.0/stop"
# rust, go and js all cap hop and stop messages at 4 KiB.
MAX_MESSAGE_SIZE = 4096
VOUCHER_DOMAIN = "libp2p-relay-rsvp"
VOUCHER_CODEC = 0x0302
# go and js write the codec as its two big-endian bytes, not as a varint; we do the same and
# accept either form.
VOUCHER_PAYLOAD_TYPE = b"\x03\x02"

HopMessage = circuit_pb2.HopMessage
StopMessage = circuit_pb2.StopMessage
Status = circuit_pb2.Status
OK = circuit_pb2.OK
RESERVATION_REFUSED = circuit_pb2.RESERVATION_REFUSED
RESOURCE_LIMIT_EXCEEDED = circuit_pb2.RESOURCE_LIMIT_EXCEEDED
PERMISSION_DENIED = circuit_pb2.PERMISSION_DENIED
CONNECTION_FAILED = circuit_pb2.CONNECTION_FAILED
NO_RESERVATION = circuit_pb2.NO_RESERVATION
MALFORMED_MESSAGE = circuit_pb2.MALFORMED_MESSAGE
UNEXPECTED_MESSAGE = circuit_pb2.UNEXPECTED_MESSAGE


def status_name(code: int) -> str:
    try:
        return circuit_pb2.Status.Name(code)
    except ValueError:
        return f"status {code}"


class MalformedMessage(ProtocolError):
    """A hop/stop message that does not parse or lacks required fields."""


_M = TypeVar("_M", bound=Message)


async def read_message(stream: ByteStream, cls: type[_M]) -> _M:
    """Read one length-prefixed HopMessage or StopMessage (4 KiB max)."""
    try:
        data = await read_length_prefixed(stream, MAX_MESSAGE_SIZE, allow_eof=True)
    except ProtocolError as e:
        raise MalformedMessage(str(e)) from None
    if data is None:
        raise ProtocolError("stream ended before a relay message")
    return parse_message(data, cls)


def parse_message(data: bytes, cls: type[_M]) -> _M:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception as e:
        raise MalformedMessage(f"malformed {cls.__name__}: {e}") from None
    if not msg.IsInitialized():
        raise MalformedMessage(f"{cls.__name__} lacks required fields")
    return msg


async def write_message(stream: ByteStream, msg: Message) -> None:
    await write_length_prefixed(stream, msg.SerializeToString())


def peer_of(msg: circuit_pb2.HopMessage | circuit_pb2.StopMessage) -> PeerId:
    if not msg.HasField("peer"):
        raise MalformedMessage("message has no peer")
    try:
        return PeerId.from_bytes(msg.peer.id)
    except ProtocolError as e:
        raise MalformedMessage(f"bad peer id: {e}") from None


def make_voucher(identity: Identity, peer: PeerId, expiration: int) -> bytes:
    payload = circuit_pb2.ReservationVoucher(
        relay=identity.peer_id.to_bytes(), peer=peer.to_bytes(), expiration=expiration
    ).SerializeToString()
    return Envelope.seal(identity, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, payload)


def open_voucher(data: bytes) -> circuit_pb2.ReservationVoucher:
    """Verify and decode a voucher: right payload type, and signed by the relay it names."""
    env = Envelope.open(data, VOUCHER_DOMAIN)
    if env.payload_type not in (VOUCHER_PAYLOAD_TYPE, encode_uvarint(VOUCHER_CODEC)):
        raise MalformedMessage(f"voucher envelope has payload type {env.payload_type.hex()}")
    voucher = parse_message(env.payload, circuit_pb2.ReservationVoucher)
    if PeerId.from_public_key(env.public_key).to_bytes() != voucher.relay:
        raise ProtocolError("voucher is not signed by the relay it names")
    return voucher
