"""The OPC UA plug-in. asyncua is imported only when a machine actually uses OPC UA, so
validating or running Modbus-only configs does not pay for it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from drivers.base import Driver, DriverSpec
from drivers.file_checks import FileChecker, FileProblem
from drivers.opcua.config import OpcUaConnection, OpcUaSignalFields, check_machine


def _build(conn: OpcUaConnection, groups: Mapping[str, Sequence[OpcUaSignalFields]],
           intervals: Mapping[str, float], shared: dict[str, Any]) -> Driver:
    from drivers.opcua.driver import OpcUaDriver
    return OpcUaDriver(conn, groups, intervals)


def _check_files(conn: OpcUaConnection, files: FileChecker) -> list[FileProblem]:
    from drivers.opcua.files import check_files
    return check_files(conn, files)


OPCUA = DriverSpec("opcua", OpcUaConnection, OpcUaSignalFields, _build, check_machine,
                   check_files=_check_files)
