"""Protocol drivers. Each driver is a plug-in found through drivers.registry."""
