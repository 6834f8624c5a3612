"""The response cache: exact and semantic, partitioned by construction, shared across replicas through Redis.

`stage` holds the stage and its filter, `keys` what makes two requests share an answer, `entry` what is stored
and how it is replayed, `flight` single flight for concurrent identical misses, `store` the stores.
"""

from .stage import build

__all__ = ["build"]
