r"""Models and layers for crystal property prediction on periodic graphs."""
from .atom_embedding import AtomEmbedding, load_atom_table
from .attention_conv import SymmetricAttentionConv
from .cgcnn import CGCNN
from .pdd_layer import GatedPDDLayer
from .rbf import GaussianRBF
from .updd_mixing import UPDDMixing
from .wpddformer import WPDDFormer

__all__ = [
    'WPDDFormer',
    'CGCNN',
    'SymmetricAttentionConv',
    'GatedPDDLayer',
    'UPDDMixing',
    'GaussianRBF',
    'AtomEmbedding',
    'load_atom_table',
]
