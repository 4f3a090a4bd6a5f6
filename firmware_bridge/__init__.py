"""Serial link to the line's microcontroller: part-present triggers in, verdicts out.

protocol.py is the wire format (mirrored byte for byte by firmware/edge_protocol.c);
link.py owns the port (reader thread, reconnect); bridge.py answers triggers in time.
"""
