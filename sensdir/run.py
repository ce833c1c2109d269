"""``python -m sensdir.run [-m] key=value ...``: compose the config, call ``run_job``."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from sensdir.config import register_configs, to_config
from sensdir.errors import SensdirError
from sensdir.job import run_job

log = logging.getLogger("sensdir")


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        result = run_job(to_config(cfg))
    except SensdirError as e:
        log.error("%s", e)
        print(f"sensdir: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"sensdir: results in {result.job_dir}")


def cli() -> None:
    register_configs()
    main()


if __name__ == "__main__":
    cli()
