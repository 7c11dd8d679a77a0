"""edge-agent: polls shop-floor machines, buffers every sample durably, publishes to MQTT."""

__version__ = "0.1.0"
