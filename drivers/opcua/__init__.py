"""OPC UA driver (asyncua): read, subscribe and event acquisition."""
