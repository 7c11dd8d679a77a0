"""Modbus simulators: TCP and RTU servers, the stamping press (TCP) and forging line (RTU)."""
