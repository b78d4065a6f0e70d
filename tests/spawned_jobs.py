"""Jobs for tests of spawned processes, in a module that imports nothing heavy: a spawned child imports the job's
module by name before it runs the job, and a test module's imports (torch, lightning) cost it seconds."""

import os


def double(value: int) -> dict:
    if value < 0:
        raise ValueError(f"no shape of size {value}")
    return {"value": 2 * value, "pid": os.getpid()}
