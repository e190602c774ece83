"""Performance benchmarks of the station against the physical limits and a peer, measured in one run.

``bench/run`` (or ``python -m bench.perf``) runs all five and prints one table: each figure, the
reference measured in the same run, their ratio and the issue's target. ``--quick`` runs a reduced
version. Nothing here is a timed test: tests/perf only checks that the benchmarks run.
"""
