"""Modbus TCP driver: config model, read planner, codec, transport."""
