"""Read an offline wandb run file (``run-<id>.wandb``) back: the records wandb wrote, decoded with its protobufs.

The file is wandb's LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32, little-endian length, type FULL/FIRST/MIDDLE/LAST). wandb >= 0.2x no longer
ships a Python reader, so the tests carry this one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb run file"
    records, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            offset += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        payload = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            records.append(pending + payload)
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
    return records


def read_run(path: Path) -> dict:
    """{"history": [{key: value}], "metrics": {glob_or_name: step_metric}} of one offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, metrics = [], {}
    for payload in raw_records(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict = {}
            for item in record.history.item:
                value = json.loads(item.value_json)
                if item.key or len(item.nested_key) == 1:
                    row[item.key or item.nested_key[0]] = value
                else:  # a media entry is flattened into (key, field) items
                    row.setdefault(item.nested_key[0], {})["/".join(item.nested_key[1:])] = value
            history.append(row)
        elif kind == "metric":
            metrics[record.metric.glob_name or record.metric.name] = record.metric.step_metric
    return {"history": history, "metrics": metrics}
