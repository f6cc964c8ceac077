"""How close recollections come to real training images, for the two ways of drawing them (paper, Table 1).

Code sampling: codes drawn uniformly from all l^c, decoded. Buffer sampling: stored codes drawn uniformly from the
RecollectionWriter's buffer, decoded. For each, the mean over ``num_samples`` recollections of the exact L1
distance (mean absolute difference per pixel, [0, 1] scale) to the nearest image of the whole training set.
Low buffer-sampling distances with higher code-sampling ones say that the generator reproduces the stored
experiences and that the buffer, not the prior, is what keeps them.

Measured at the end of the test stage, with the weights being tested and the buffer as the fit left it; logged
as ``nn/code_sampling`` and ``nn/buffer_sampling`` and written to ``<output_dir>/nearest_neighbor.json``.
Draws come from the buffer's own sampling generator, so a restored checkpoint gives the same numbers. Under
DDP each rank measures its share of the samples against its own buffer and the mean is taken over ranks.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lossy_memory.callbacks.recollection_writer import find_writer
from lossy_memory.memory import RecollectionBuffer
from lossy_memory.memory.replay import evaluating
from lossy_memory.metrics.nearest_neighbor import nearest_neighbor_distances
from lossy_memory.writers import write_json


class NearestNeighborDistance(L.Callback):
    """Table 1's nearest-neighbour L1 distances of code-sampled and buffer-sampled recollections (module docstring).

    ``num_samples``: recollections of each kind (the paper: 10,000). ``decode_batch_size``, ``query_chunk``,
    ``reference_chunk``: how much is decoded and compared at once (memory, not results).
    """

    def __init__(self, output_dir: str | Path, num_samples: int = 10000, decode_batch_size: int = 1000,
                 query_chunk: int = 1024, reference_chunk: int = 8192):
        for name, value in (("num_samples", num_samples), ("decode_batch_size", decode_batch_size)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.output_dir, self.num_samples, self.decode_batch_size = Path(output_dir), int(num_samples), int(decode_batch_size)
        self.query_chunk, self.reference_chunk = query_chunk, reference_chunk
        self.results: dict[str, float | int] = {}

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        buffer = find_writer(trainer).buffer
        if not isinstance(buffer, RecollectionBuffer):
            raise ValueError(f"nearest-neighbour distances of recollections need a RecollectionBuffer, got {type(buffer).__name__}")
        if len(buffer) == 0:
            raise ValueError("the recollection buffer is empty: nothing was written during fit (run trainer.fit before testing)")
        references = getattr(getattr(trainer.datamodule, "train_set", None), "images", None)
        if not isinstance(references, torch.Tensor):
            raise ValueError("the datamodule must expose its training images as train_set.images (an ImageDataModule does)")
        n = math.ceil(self.num_samples / trainer.world_size)
        drawn = {"code_sampling": buffer.sample_codes(n), "buffer_sampling": buffer.sample(n).data}
        references = references.to(pl_module.device)
        means = []
        with evaluating(pl_module):
            for codes in drawn.values():
                images = buffer.decode(pl_module.decode, codes, self.decode_batch_size)
                means.append(nearest_neighbor_distances(images, references, self.query_chunk, self.reference_chunk).mean())
        means = trainer.strategy.reduce(torch.stack(means).double(), reduce_op="mean")
        items = trainer.strategy.reduce(torch.tensor(len(buffer), device=pl_module.device), reduce_op="sum")
        metrics = {f"nn/{name}": float(value) for name, value in zip(drawn, means)}
        for name, value in metrics.items():
            pl_module.log(name, value, add_dataloader_idx=False)
        self.results = {**metrics, "num_samples": n * trainer.world_size, "buffer_items": int(items),
                        "reference_items": len(references), "c": buffer.c, "l": buffer.l}
        self.save()

    @rank_zero_only
    def save(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.output_dir / "nearest_neighbor.json", self.results)
