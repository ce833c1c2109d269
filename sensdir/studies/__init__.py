"""Studies: experiments whose result is a table rather than walks (feature absorption, IOI
supervised dictionaries, SAE quality). Each module in this package registers one study;
``study=<name>`` runs it through the same job -> shard -> reduce path as the walks."""

from sensdir.studies.base import STUDIES, Study, StudyConfig, StudyContext

__all__ = ["STUDIES", "Study", "StudyConfig", "StudyContext"]
