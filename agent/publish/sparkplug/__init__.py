"""Eclipse Sparkplug B 3.0 payloads: the protobuf schema, datatypes and the payload codec."""

from agent.publish.sparkplug.codec import Metric, decode, encode
from agent.publish.sparkplug.datatypes import DataType, datatype_of, get_value, set_value

__all__ = ["DataType", "Metric", "datatype_of", "decode", "encode", "get_value", "set_value"]
