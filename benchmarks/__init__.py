"""
Benchmarks of the MKA1 provider against what a user would otherwise pick (``make bench``).

Every benchmark talks HTTP to the emulator running in its own process, and prints our figure, the other's,
their ratio and the target:

- ``triggerer``: N triggers in one event loop, as Airflow's triggerer runs them (stalls, CPU, memory, delay);
- ``api_calls``: GET calls a trigger makes while a batch of 10 minutes or 2 hours runs (simulated clock);
- ``download``: a 1 GiB file to local disk with ``MKA1Hook.download_file`` vs ``curl -o``;
- ``parse_cost``: what importing our operator, sensor and hook adds to a DAG file's parse;
- ``emulator_memory`` (the emulator's own): its peak RSS while it takes and serves a 1 GiB file.

``python -m benchmarks`` runs them all; ``python -m benchmarks.<name> --help`` runs one.
"""
