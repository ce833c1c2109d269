"""Everything sensdir knows about its own output: a job's identity and the files it writes.

- ``identity``: the resolved config as a dict, its hash, the job key and folder.
- ``layout``: file names (``shard-<i>-of-<n>.{plan.json,parquet,manifest.json}``), job folders.
- ``records``: atomic writes, plans, manifests, Parquet metadata, the completeness check.
- ``schema``: the walk shards' columns and table building; ``open_sweep`` for readers.

The job writes through these, and status, completeness, the reduce and the synthetic test
sweeps read through them, so the format is described once (docs/shards.md).
"""
