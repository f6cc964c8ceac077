"""Lightning overhead: training examples/s through the project entry point vs a plain PyTorch loop.

Both sides train the same DiscreteVAE (``+experiment=mnist_compression``: c=168, l=2, MNIST, batch 100) from
the same datamodule loader, with the same optimizer and loss. The Lightning side is built by
``lossy_memory.train.build`` with the callbacks, progress bar and CSV logger a user gets.

The two loops run interleaved in one process, one plain step after every Lightning step (from a callback, timed
apart from the Lightning step), so both see the same load: on a shared machine, runs taken one after the other
differ by more than the overhead being measured (steps of the same loop swing between ~0.35 s and ~2.3 s as
neighbours come and go). The first ``WARMUP_STEPS`` of each are discarded (start-up, first-call allocations). The
overhead is the median, over adjacent pairs, of Lightning step time / plain step time: a pair shares its load,
while anything Lightning adds every step (hooks, logging, progress bar) is in every pair. Examples/s are those
of each side's median step.
The project's bar: Lightning within 10% of the plain loop.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from lossy_memory.runtime import CONFIG_DIR, register_resolvers
from lossy_memory.train import build

WARMUP_STEPS = 5
TIMED_STEPS = 30
BATCH_SIZE = 100  # the experiment's data.batch_size, set explicitly so the figures stay comparable
BAR = 0.10


def compose_run_config(output_dir: Path, overrides: list[str]) -> DictConfig:
    """The config ``python -m lossy_memory.train +experiment=mnist_compression <overrides>`` runs, writing into output_dir."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+experiment=mnist_compression", f"data.batch_size={BATCH_SIZE}", *overrides],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        del cfg.hydra
    return cfg


class PlainLoop:
    """The same model, loader, on-device conversion, loss and optimizer, written by hand; ``step`` does one batch."""

    def __init__(self, cfg: DictConfig):
        self.model = instantiate(cfg.model)
        self.datamodule = instantiate(cfg.data)
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        self.optimizer = self.model.configure_optimizers()
        self.batches = iter(self.datamodule.train_dataloader())
        self.model.train()

    def step(self) -> None:
        x = self.datamodule.on_after_batch_transfer(next(self.batches), 0)["x"]
        x_hat, kl = self.model(x)
        loss = F.l1_loss(x_hat, x, reduction="none").flatten(1).sum(1).mean() + self.model.kl_weight * kl.mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


class Interleave(L.Callback):
    """At the end of every Lightning training batch, one plain step. Lightning's step time is the time from the end
    of one such call to the start of the next: all of Lightning's loop, hooks, logging and data fetching."""

    def __init__(self, plain: PlainLoop):
        self.plain = plain
        self.lightning_steps: list[float] = []
        self.plain_steps: list[float] = []
        self.resumed: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        start = time.perf_counter()
        if self.resumed is not None:
            self.lightning_steps.append(start - self.resumed)
        self.plain.step()
        self.resumed = time.perf_counter()
        self.plain_steps.append(self.resumed - start)


def rate(step_times: list[float]) -> float:
    """Examples/s of the median step after warm-up."""
    return BATCH_SIZE / statistics.median(step_times[WARMUP_STEPS:])


def paired_overhead(lightning: list[float], plain: list[float]) -> float:
    """Median over adjacent (Lightning, plain) steps after warm-up of the extra time Lightning took, as a fraction."""
    return statistics.median(ours / ref for ours, ref in zip(lightning[WARMUP_STEPS:], plain[WARMUP_STEPS:])) - 1


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run_config(Path(tmp) / "run", [f"+trainer.max_steps={WARMUP_STEPS + TIMED_STEPS + 1}", "test=false"])
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, model, trainer = build(cfg)
        interleave = Interleave(PlainLoop(cfg))
        trainer.callbacks.append(interleave)
        trainer.fit(model, datamodule=datamodule)
    plain, lightning = rate(interleave.plain_steps), rate(interleave.lightning_steps)
    overhead = paired_overhead(interleave.lightning_steps, interleave.plain_steps)
    print(f"DiscreteVAE c=168 l=2, MNIST, batch {BATCH_SIZE}: median of {TIMED_STEPS} interleaved steps a side after {WARMUP_STEPS} "
          f"warm-up; {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'loop':<12}{'examples/s':>12}{'ms/step':>10}")
    for side, value in (("plain", plain), ("lightning", lightning)):
        print(f"{side:<12}{value:>12.1f}{1000 * BATCH_SIZE / value:>10.1f}")
    print(f"Lightning overhead (median over paired steps): {overhead:+.1%} of step time, bar <= {BAR:.0%}: "
          f"{'OK' if overhead <= BAR else 'ABOVE BAR'}")


if __name__ == "__main__":
    main()
