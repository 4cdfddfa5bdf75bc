"""Protobuf messages: each `.proto` here is compiled with the official `protoc`
(`scripts/gen-protos`); the `_pb2.py` files are generated and never edited by hand."""
