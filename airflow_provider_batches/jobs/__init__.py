"""The parts of a batch job that are not Airflow task logic: input, shards, index, resubmission, merge.

Used by :class:`~airflow_provider_batches.operators.mka1_job.MKA1BatchJobOperator`; none of them talks
to the API except through the hook passed in.
"""
