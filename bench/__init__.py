"""``make bench`` and ``make chaos``: speed, faults and recovery of the whole service, measured on this machine.

``python -m bench.bench`` (``make bench``) and ``python -m bench.chaos`` (``make chaos``); see docs/benchmarks.md.
"""
