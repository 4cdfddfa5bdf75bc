"""The multibase encodings libp2p uses: base58btc ('z'), base32 lower ('b'), base64url ('u'),
base16 ('f'). Base58 works on whole integers, never byte-by-byte Python loops over big inputs
(peer ids and certhashes are short)."""

from __future__ import annotations

import base64
import binascii

_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class MultibaseError(ValueError):
    pass


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    out.extend(b"1" * zeros)
    out.reverse()
    return out.decode("ascii")


def b58decode(text: str) -> bytes:
    raw = text.encode("ascii", "strict") if text.isascii() else None
    if raw is None:
        raise MultibaseError("base58 text must be ASCII")
    n = 0
    for c in raw:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise MultibaseError(f"invalid base58 character {chr(c)!r}") from None
    zeros = len(raw) - len(raw.lstrip(b"1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def b32encode_lower(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode_lower(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        data = base64.b32decode(padded)
    except (binascii.Error, ValueError) as e:
        raise MultibaseError(f"invalid base32: {e}") from None
    # The stdlib accepts non-zero trailing bits, so different texts would decode to the same
    # bytes; js (multiformats) refuses them. Case and trailing '=' are accepted, as js does.
    if b32encode_lower(data) != text.lower().rstrip("="):
        raise MultibaseError("invalid base32: non-zero trailing bits")
    return data


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise MultibaseError(f"invalid base64url: {e}") from None
    # The stdlib silently skips characters outside the alphabet ('!', '+', '/', ...) and accepts
    # non-zero trailing bits, so different texts would decode to the same bytes; js (multiformats)
    # refuses both. Trailing '=' is accepted, as js does.
    if b64url_encode(data) != text.rstrip("="):
        raise MultibaseError("invalid base64url: a character outside the alphabet or stray bits")
    return data


def encode(data: bytes, base: str = "base58btc") -> str:
    if base == "base58btc":
        return "z" + b58encode(data)
    if base == "base32":
        return "b" + b32encode_lower(data)
    if base == "base64url":
        return "u" + b64url_encode(data)
    if base == "base16":
        return "f" + data.hex()
    raise MultibaseError(f"unsupported multibase {base}")


def decode(text: str) -> bytes:
    if not text:
        raise MultibaseError("empty multibase string")
    prefix, body = text[0], text[1:]
    if prefix == "z":
        return b58decode(body)
    if prefix == "b":
        return b32decode_lower(body)
    if prefix == "u":
        return b64url_decode(body)
    if prefix == "f":
        try:
            data = bytes.fromhex(body)
        except ValueError as e:
            raise MultibaseError(f"invalid base16: {e}") from None
        if data.hex() != body.lower():  # fromhex skips whitespace between bytes
            raise MultibaseError("invalid base16: whitespace")
        return data
    raise MultibaseError(f"unsupported multibase prefix {prefix!r}")
