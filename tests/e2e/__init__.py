"""Tests against real parts: mosquitto, the simulators, agent processes, pty pairs."""
