"""Benchmarks, measured side by side in one run: ``python -m gslrm.bench`` (cpu.py) and ``--device cuda``
(gpu.py), with what they share in timing.py."""
