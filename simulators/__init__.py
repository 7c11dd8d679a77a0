"""Independent, hand-written device simulators (Modbus TCP) for testing and benchmarking the agent."""
