"""OPC UA simulators: the shared server plumbing and the CNC, injection and bulk machines."""
