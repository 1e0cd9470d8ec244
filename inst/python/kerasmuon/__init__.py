"""Muon for Keras 3: orthogonalized momentum for weight matrices, AdamW for the rest."""

from kerasmuon.optimizer import Muon
from kerasmuon.routing import matrix_view
from kerasmuon.routing import routing_table

__all__ = ["Muon", "matrix_view", "routing_table"]
