"""Edge derivations: machine state, cycles with their features, rates and counters,
computed from a machine's readings as they are polled."""
