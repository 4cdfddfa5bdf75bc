"""transports/webrtc_direct/stun.py, the one STUN codec: messages (binding, RFC 5780, TURN
methods and attributes), ChannelData and TCP stream framing.

Contract: StunError only (module docstring); accessors of a parsed message never raise;
build(parse(x)) with the same attributes gives an equal message.
"""

from p2prtc.transports.webrtc_direct import stun

KEY = b"0123456789abcdefghijklmn"


def test_one(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] & 3, data[1:]
    if mode == 3:
        try:
            channel, payload = stun.parse_channel_data(body)
        except stun.StunError:
            pass
        else:
            assert stun.CHANNEL_MIN <= channel <= stun.CHANNEL_MAX
            assert stun.parse_channel_data(stun.channel_data(channel, payload)) == (channel,
                                                                                    payload)
        if len(body) >= 4:
            n = stun.stream_frame_length(body[:4])
            assert n is None or n >= 4
        return
    max_size = stun.MAX_TURN_MESSAGE_SIZE if mode == 2 else stun.MAX_MESSAGE_SIZE
    try:
        msg = stun.parse(body, max_size=max_size)
    except stun.StunError:
        return
    msg.username, msg.use_candidate, msg.priority, msg.error_code()
    msg.xor_mapped_address(), msg.mapped_address(), msg.response_origin()
    msg.other_address(), msg.change_request()
    for t in (stun.ATTR_REALM, stun.ATTR_NONCE, stun.ATTR_SOFTWARE):
        stun.text_attr(msg, t)
    stun.xor_addresses(msg, stun.ATTR_XOR_PEER_ADDRESS)
    stun.method_of(msg.msg_type), stun.class_of(msg.msg_type)
    stun.verify_integrity(body, msg, KEY)
    # Rebuild from the attributes (without integrity/fingerprint, which build adds itself).
    attrs = [(t, v) for t, v in msg.attr_list
             if t not in (stun.ATTR_MESSAGE_INTEGRITY, stun.ATTR_FINGERPRINT)]
    if len(attrs) == len(msg.attr_list):
        rebuilt = stun.build(msg.msg_type, msg.txid, attrs, fingerprint=False)
        again = stun.parse(rebuilt, max_size=stun.MAX_TURN_MESSAGE_SIZE)
        assert again.attr_list == msg.attr_list and again.msg_type == msg.msg_type


def seeds() -> list[bytes]:
    txid = bytes(range(12))
    out = [
        b"\x00" + stun.binding_request(txid, "abcd:efgh", KEY, priority=12345, controlling=True, tie_breaker=7,
                                       use_candidate=True),
        b"\x00" + stun.binding_success(txid, ("198.51.100.7", 5000), KEY),
        b"\x00" + stun.binding_error(txid, 420, "Unknown Attribute", KEY),
        b"\x00" + stun.build(stun.BINDING_REQUEST, txid,
                             [(stun.ATTR_CHANGE_REQUEST, stun.change_request_value(True, True))]),
        b"\x02" + stun.build(stun.message_type(stun.METHOD_ALLOCATE, stun.CLASS_REQUEST), txid,
                             [(stun.ATTR_REQUESTED_TRANSPORT, b"\x11\x00\x00\x00"),
                              (stun.ATTR_USERNAME, b"1900000000:peer"),
                              (stun.ATTR_REALM, b"p2prtc"), (stun.ATTR_NONCE, b"n" * 20)]),
        b"\x02" + stun.build(stun.message_type(stun.METHOD_SEND, stun.CLASS_INDICATION), txid,
                             [(stun.ATTR_XOR_PEER_ADDRESS,
                               stun.xor_address_value(("203.0.113.9", 7000), txid)),
                              (stun.ATTR_DATA, b"datagram")]),
        b"\x03" + stun.channel_data(0x4001, b"hello", pad=True),
    ]
    return out
