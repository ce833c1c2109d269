"""sensdir: sensitive-directions experiments on language models with sparse autoencoders.

Data flow: config (``sensdir.config``) -> job (``sensdir.job.run_job``) -> Parquet shards
(``sensdir.artifacts``) -> reduce. Importing this package has no side effects and imports no
heavy dependency.
"""

__version__ = "0.1.0"
