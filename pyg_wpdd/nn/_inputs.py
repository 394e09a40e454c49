from typing import Iterable

from torch_geometric.data import Data

# Attributes each model reads, with the transform of pyg_wpdd.transforms that adds them.
ATTRIBUTE_SOURCES = {
    'z': 'the structure reader (pyg_wpdd.io)',
    'edge_index': 'PeriodicKNNGraph',
    'edge_dist': 'PeriodicKNNGraph',
    'wpdd': 'WPDD',
    'updd_index': 'UPDD',
    'updd_weight': 'UPDD',
}


def check_attributes(data: Data, names: Iterable[str], model_name: str) -> None:
    """Raises a :class:`ValueError` that names the missing attributes and the transforms that
    add them."""
    missing = [name for name in names if getattr(data, name, None) is None]
    if missing:
        sources = sorted({ATTRIBUTE_SOURCES.get(name, 'a transform') for name in missing})
        raise ValueError(f"{model_name} needs the data attributes {missing}, which are "
                         f"missing: build the graphs with {', '.join(sources)}")
