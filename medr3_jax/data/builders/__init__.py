"""TFDS builders, one per benchmark, all producing `QARecord` features (see base.py)."""

from medr3_jax.data.builders.base import FEATURES, QABuilder
from medr3_jax.data.builders.bioasq import Bioasq
from medr3_jax.data.builders.medmcqa import Medmcqa
from medr3_jax.data.builders.medqa import Medqa
from medr3_jax.data.builders.mirage import Mirage
from medr3_jax.data.builders.mmlu_med import MmluMed
from medr3_jax.data.builders.pubmedqa import Pubmedqa
from medr3_jax.data.builders.rarearena import Rarearena

BUILDERS: dict[str, type[QABuilder]] = {
    "medqa": Medqa,
    "medmcqa": Medmcqa,
    "pubmedqa": Pubmedqa,
    "mmlu_med": MmluMed,
    "bioasq": Bioasq,
    "mirage": Mirage,
    "rarearena": Rarearena,
}

__all__ = ["BUILDERS", "FEATURES", "QABuilder"] + [cls.__name__ for cls in BUILDERS.values()]
