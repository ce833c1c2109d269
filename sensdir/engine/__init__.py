"""Readouts of perturbed activations: run the model from the site's layer on.

For the last-position site every row shares the clean prefix, so a row is the clean
residual stream at the site with its last position replaced; only blocks from the site's
layer on are run, and only the perturbed position is unembedded (the vocabulary-sized
logits are the largest tensor of the whole computation). ``walks`` chooses the path;
``reference`` is the papers' computation, which tests hold every path to.
"""

from sensdir.engine.forward import clean_site_resid
from sensdir.engine.walks import PATHS, POSITIONS, WalkEngine, choose_path

__all__ = ["PATHS", "POSITIONS", "WalkEngine", "choose_path", "clean_site_resid"]
