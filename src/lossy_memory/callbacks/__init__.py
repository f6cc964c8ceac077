"""Lightning callbacks: things a run does beside training."""

from lossy_memory.callbacks.reconstruction_grid import ReconstructionGrid
from lossy_memory.callbacks.run_record import RunRecord

__all__ = ["ReconstructionGrid", "RunRecord"]
