"""Wire records evolve by the rules of ``bus/wire.py``: a new field has a default, goes
last, and an older message still decodes."""

from __future__ import annotations

import msgspec
from warden.bus.wire import ToolCallRecord, encoder


def test_a_tool_call_record_is_not_timed_out_unless_it_says_so() -> None:
    record = ToolCallRecord(name="run_tests", ok=True, output="PASS", duration_ms=3.0)
    assert record.timed_out is False
    assert b"timed_out" not in encoder.encode(record)  # unchanged on the wire for old readers


def test_a_record_from_before_timed_out_existed_decodes_as_not_timed_out() -> None:
    old = b'{"type":"tool_call","name":"grep","ok":false,"output":"x","duration_ms":1.5}'
    record = msgspec.json.decode(old, type=ToolCallRecord)
    assert (record.ok, record.timed_out) == (False, False)


def test_a_timed_out_record_round_trips() -> None:
    record = ToolCallRecord(
        name="run_tests", ok=False, output="FAIL: timed out", duration_ms=500.0, timed_out=True
    )
    assert msgspec.json.decode(encoder.encode(record), type=ToolCallRecord) == record


def test_timed_out_is_the_last_field_of_a_tool_call_record() -> None:
    assert ToolCallRecord.__struct_fields__[-1] == "timed_out"
