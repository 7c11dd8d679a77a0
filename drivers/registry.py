"""Protocol name -> driver plug-in. Adding a protocol is one line here."""

from __future__ import annotations

from drivers.base import DriverSpec
from drivers.modbus.driver import MODBUS_RTU, MODBUS_RTU_TCP, MODBUS_TCP
from drivers.opcua.spec import OPCUA
from drivers.serial_line.driver import SERIAL_LINE

DRIVERS: dict[str, DriverSpec] = {spec.protocol: spec for spec in (MODBUS_TCP, MODBUS_RTU, MODBUS_RTU_TCP, OPCUA, SERIAL_LINE)}
