"""One job: (model, SAE, site, data, direction or study, schedule) -> one Parquet shard.

``run_job`` is what ``python -m sensdir.run`` calls and what tests call with objects. It reads
as: check the config, skip if done, load, plan the rows, compute them in batches, write.
Every check of the input happens before any compute and before anything is written, so bad
input leaves no partial shard behind.
"""

from sensdir.job.runner import JobResult, run_job

__all__ = ["JobResult", "run_job"]
