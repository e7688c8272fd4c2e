"""The networks and their training (identity network, refiner, GAN-only baseline, training pairs,
losses, weights I/O). Their functions raise `FaceSynthError` (one line) for bad input, re-exported here."""
from face3d.errors import FaceSynthError

__all__ = ["FaceSynthError"]
