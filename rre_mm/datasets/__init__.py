"""Data transforms for MMDetection pipelines."""
from .transforms import RandomRot90, Rot90, rot90_matrix, rotate_results

__all__ = ['RandomRot90', 'Rot90', 'rot90_matrix', 'rotate_results']
