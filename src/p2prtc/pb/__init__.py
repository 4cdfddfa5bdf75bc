"""Protobuf messages: each `.proto` here is compiled with the official `protoc`
(`scripts/gen-protos`); the `_pb2.py` files are generated and never edited by hand."""


def text(value: str | bytes) -> str:
    """A proto2 `string` field as str. upb hands back bytes for a string field that is not valid
    UTF-8 (it does not validate proto2 strings); we decode with U+FFFD replacements, as js's
    protobuf decoder does, so a peer's bad text never reaches code that expects str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
