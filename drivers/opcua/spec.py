"""The OPC UA plug-in. asyncua is imported only when a machine actually uses OPC UA, so
validating or running Modbus-only configs does not pay for it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from drivers.base import Driver, DriverSpec
from drivers.file_checks import FileChecker, FileProblem
from drivers.opcua.commands import COMMANDS
from drivers.opcua.config import OpcUaConnection, OpcUaSignalFields, check_machine


def _build(conn: OpcUaConnection, groups: Mapping[str, Sequence[OpcUaSignalFields]],
           intervals: Mapping[str, float], shared: dict[str, Any]) -> Driver:
    from drivers.opcua.driver import OpcUaDriver
    return OpcUaDriver(conn, groups, intervals)


def _check_files(conn: OpcUaConnection, files: FileChecker) -> list[FileProblem]:
    from drivers.opcua.files import check_files
    return check_files(conn, files)


# Reasons that mean the machine file names something the server does not have (or does not
# let this client read), spelled out so that this module needs no asyncua: the driver's node_unresolved and
# enum_names_unavailable, a refused monitored item, and the server's own status names.
MISMATCH_REASONS = ("node_unresolved", "monitored_item:", "enum_names_unavailable",
                    "BadNodeIdUnknown", "BadAttributeIdInvalid", "BadNotReadable",
                    "BadUserAccessDenied")

OPCUA = DriverSpec("opcua", OpcUaConnection, OpcUaSignalFields, _build, check_machine,
                   check_files=_check_files, commands=COMMANDS,
                   mismatch_reasons=MISMATCH_REASONS)
