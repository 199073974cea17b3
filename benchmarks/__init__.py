"""Benchmarks of cramp-cds (issue 7): each module prints its figures, the machine, and every TARGET with PASS/MISS.

Run one alone (``python -m benchmarks.hook_latency``) or all (``make bench`` = ``python -m benchmarks.run_all``).
They print figures and never assert on time: a MISS is information for people, not a failed build.
"""
