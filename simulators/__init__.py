"""Independent, hand-written device simulators (Modbus TCP/RTU, OPC UA, ASCII serial) for
testing and benchmarking the agent: one subpackage per protocol family, shared pieces on top."""
