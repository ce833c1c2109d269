"""Hydra configs shipped with the package (``sensdir.run``'s config path; ``pkg://sensdir.conf``)."""
