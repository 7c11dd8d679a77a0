"""Sparkplug parts without a broker: bdSeq persistence, topics, metric catalog."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config.models import AgentFile
from agent.core.model import BAD, GOOD, UNCERTAIN
from agent.publish.sparkplug.bdseq import BdSeq
from agent.publish.sparkplug.datatypes import DataType
from agent.publish.sparkplug.metrics import Catalog, coerce
from agent.core.topics import Topics, state_topic
from agent.core.encoding import PayloadCodec, decode
from agent.core.model import Reading
from agent.publish.sparkplug.record import SparkplugRecords, read
from agent.publish.sparkplug.session import collected


def test_bdseq_is_persisted_and_wraps_from_255_to_0(tmp_path: Path) -> None:
    """tck-id-payloads-ndeath-bdseq: +1 per new connection, 0..255, across restarts."""
    path = tmp_path / "sparkplug-bdseq"

    async def take(n: int) -> list[int]:
        seq = BdSeq(path)  # a fresh process each time: it reads the file
        return [await seq.next() for _ in range(n)]

    assert asyncio.run(take(3)) == [0, 1, 2]
    assert asyncio.run(take(1)) == [3]
    path.write_text("254\n")
    assert asyncio.run(take(3)) == [255, 0, 1]
    path.write_text("garbage")  # a damaged file starts over rather than failing
    assert asyncio.run(take(1)) == [0]


def test_topics() -> None:
    """tck-id-intro-group-id-chars and the namespace spBv1.0/<group>/<type>/<node>[/<device>]."""
    t = Topics("plant", "gw-1")
    assert (t.nbirth, t.ndeath, t.ncmd) == ("spBv1.0/plant/NBIRTH/gw-1", "spBv1.0/plant/NDEATH/gw-1",
                                            "spBv1.0/plant/NCMD/gw-1")
    assert t.device("DDATA", "press-01") == "spBv1.0/plant/DDATA/gw-1/press-01"
    assert t.dcmd_all == "spBv1.0/plant/DCMD/gw-1/+"
    assert t.device_of("spBv1.0/plant/DCMD/gw-1/press-01") == "press-01"
    assert t.device_of("spBv1.0/other/DCMD/gw-1/press-01") is None
    assert state_topic("scada") == "spBv1.0/STATE/scada"


def test_catalog_fixes_datatypes_and_aliases_and_quality() -> None:
    """Aliases unique across devices, tck-id-payloads-propertyset-quality-value-type,
    tck-id-payloads-propertyset-quality-value-value (0, 192 or 500)."""
    c = Catalog(aliases=True)
    a = c.metric("p1", "press.force.peak.ch1", 12, 1, birth=True)
    b = c.metric("p2", "press.force.peak.ch1", None, 1, birth=True)
    assert (a.datatype, a.value, a.name) == (DataType.Double, 12.0, "press.force.peak.ch1")
    assert b.datatype == DataType.Double and b.value is None and a.alias != b.alias
    data = c.metric("p1", "press.force.peak.ch1", 13.5, 2)
    assert (data.name, data.alias) == (None, a.alias)
    assert c.name_of("p1", a.alias) == "press.force.peak.ch1"
    assert c.metric("p1", "cycle.count", 5.0, 1).datatype == DataType.Int64
    assert c.metric("p1", "motor.on", True, 1).datatype == DataType.Boolean
    assert c.metric("p1", "x.vendor", "text", 1).datatype == DataType.String
    assert c.metric("p1", "x.a", 1, 1, quality=BAD).properties == {"Quality": (DataType.Int32, 0)}
    assert c.metric("p1", "x.a", 1, 1, quality=UNCERTAIN).properties == {
        "Quality": (DataType.Int32, 500)}
    assert c.metric("p1", "x.a", 1, 1, quality=GOOD).properties is None
    assert not c.changed("p1", "x.a", 1, GOOD) and c.changed("p1", "x.a", 2, GOOD)
    assert c.changed("p1", "x.a", 1, BAD) and c.changed("p1", "x.a", 1.0, GOOD)


def test_values_that_do_not_fit_the_born_datatype_become_null() -> None:
    assert coerce(3, DataType.Double) == 3.0 and coerce(True, DataType.Double) is None
    assert coerce(4.0, DataType.Int64) == 4 and coerce(4.5, DataType.Int64) is None
    assert coerce("x", DataType.Boolean) is None
    assert coerce([1, 2], DataType.String) == "[1,2]"


@pytest.mark.parametrize("mqtt,message", [
    ({"profile": "sparkplug"}, "profile sparkplug needs `sparkplug: {group_id: ...}`"),
    ({"sparkplug": {"group_id": "g"}}, "`sparkplug` applies to profile: sparkplug"),
    ({"profile": "sparkplug", "sparkplug": {"group_id": "a/b"}}, "contains '/'"),
    ({"profile": "sparkplug", "sparkplug": {"group_id": "g", "edge_node_id": "n+"}},
     "contains '+'"),
    ({"more_urls": ["http://x"]}, "should match pattern"),
])
def test_sparkplug_config_errors(mqtt: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        AgentFile.model_validate({"agent": {"id": "a", "site": "s"}, "mqtt": mqtt})


def test_a_dead_devices_batch_is_published_only_if_it_holds_something_collected() -> None:
    """A replayed batch of a device that is not born gets a DBIRTH first when it carries
    data (so nothing collected before a death is lost); bad readings alone are not news."""
    bad = ("cycle.count", None, "bad", 1)
    unavailable = ("machine.availability", "UNAVAILABLE", "good", 1)
    good = ("cycle.count", 5, "good", 1)
    assert not collected([bad, unavailable], [])
    assert collected([bad, good], [])
    assert collected([], [('{"event":"machine.cycle"}', 1)])
    assert collected([("cycle.count", 5, "uncertain", 1)], [])


def test_a_batch_is_buffered_as_a_compact_record_and_read_back_whole() -> None:
    """Encoded once, when collected: the buffer's frame around tuples; a batch the uns
    profile buffered (JSON, before a switch of profile) reads the same."""
    records = SparkplugRecords("gw")
    readings = [Reading("cycle.count", 5, None, "good", None, 10**18),
                Reading("press.force", None, "kN", "bad", "timeout", 10**18 + 1)]
    body = records.frame("press-01", "e1", 7, records.readings(readings))
    assert decode(body)["seq"] == 7 and decode(body)["epoch"] == "e1"  # as buffer recover reads
    assert read(body) == ("press-01", [("cycle.count", 5, "good", 10**18),
                                       ("press.force", None, "bad", 10**18 + 1)], [])
    events = records.frame("press-01", "e1", 8, records.events([{"event": "x", "ts": 5}]),
                           "events")
    assert read(events) == ("press-01", [], [('{"event":"x","ts":5}', 5)])
    uns = PayloadCodec("gw", "json")
    legacy = uns.frame("press-01", "e1", 9, uns.readings(readings[:1]))
    assert read(legacy) == ("press-01", [("cycle.count", 5, "good", 10**18)], [])
    with pytest.raises(ValueError):
        read(b"\x93garbage")
