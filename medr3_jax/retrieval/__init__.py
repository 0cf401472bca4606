"""Retrieval over the medical corpus. So far: exact on-device top-k over a row-sharded table."""

from medr3_jax.retrieval.exact import ExactIndex

__all__ = ["ExactIndex"]
