"""Typed tables and params of restem.

Every table that a stage reads or writes is a Pydantic model here; its Arrow schema is derived from
the model (never inferred from data), and `restem.schemas.io` writes it deterministically.
"""

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.tables import Kept, ModelMeta, Problem, Rejected, Sample, Score

__all__ = ["RestemError", "content_hash", "Kept", "ModelMeta", "Problem", "Rejected", "Sample", "Score"]
