"""Lightning callbacks: things a run does beside training."""

from lossy_memory.callbacks.nearest_neighbor import NearestNeighborDistance
from lossy_memory.callbacks.progress_bar import ProgressBar
from lossy_memory.callbacks.publish_checkpoint import PublishCheckpoint
from lossy_memory.callbacks.recollection_grid import RecollectionGrid
from lossy_memory.callbacks.recollection_writer import RecollectionWriter, find_writer
from lossy_memory.callbacks.reconstruction_grid import ReconstructionGrid
from lossy_memory.callbacks.replay_interleaving import ReplayInterleaving
from lossy_memory.callbacks.run_record import RunRecord

__all__ = ["NearestNeighborDistance", "ProgressBar", "PublishCheckpoint", "RecollectionGrid", "RecollectionWriter", "ReconstructionGrid", "ReplayInterleaving", "RunRecord", "find_writer"]
