"""Digital brain phantom: physics-based multi-contrast MR and CT-perfusion subjects with exact ground truth.

>>> from MRISynthesisLib.phantom import generate_subject, PhantomStream
>>> subject = generate_subject(seed=0, pathology="ms", spacing=2.0)
>>> subject.maps["psr"].array.shape, subject.masks["lesion"].array.dtype

See ``generator.py`` for the pipeline and ``docs/mr-physics.md`` (shared design notes) for the values.
"""

from .generator import MAP_NAMES, QUANTITATIVE_MAPS, WEIGHTED_MAPS, PhantomStream, PhantomSubject, generate_subject
from .pathology import PATHOLOGIES

__all__ = ["generate_subject", "PhantomStream", "PhantomSubject", "PATHOLOGIES", "MAP_NAMES", "QUANTITATIVE_MAPS",
           "WEIGHTED_MAPS"]
