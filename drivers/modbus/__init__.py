"""Modbus driver for TCP (`modbus-tcp`), RTU on a serial line (`modbus-rtu`) and RTU frames
over TCP (`modbus-rtu-tcp`): config models, read planner, codec, requests (pdu), the TCP
transport and the shared RTU line (bus)."""
