"""The Neurelay wire protocol, sans I/O: frames, codecs, channels and codes.

Nothing in this package touches a socket or an event loop, so every rule of
docs/protocol.md can be tested synchronously.
"""
