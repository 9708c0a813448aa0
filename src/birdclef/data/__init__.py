"""Competition-layout reading and ingest, the acquire manifest, folds, quarantine and data contracts."""

from birdclef.data.ingest import ingest_kaggle
from birdclef.data.manifest import Manifest, build_manifest, read_manifest, write_manifest
from birdclef.data.params import AcquireParams
from birdclef.data.problems import BadInputError, Problem

__all__ = [
    "AcquireParams",
    "BadInputError",
    "Manifest",
    "Problem",
    "build_manifest",
    "ingest_kaggle",
    "read_manifest",
    "write_manifest",
]
