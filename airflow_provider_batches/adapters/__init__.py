"""
Adapters that let other Airflow packages run their batches on MKA1. Each imports its package, so only
that package loads it (through an entry point); nothing else here imports them.
"""
