"""Generative knowledge distillation (paper, section 3.1): a frozen teacher trains a student of any architecture on
inputs from a source that keeps no training example, with the teacher's outputs as targets.

Sources (``source``):

* ``"recollections"``: codes from a trained DiscreteVAE's buffer (``sampling.source="buffer"``, "buffer sampling")
  or drawn uniformly from all l^c codes (``"codes"``, "code sampling"), decoded by its decoder.
* ``"lossless"``: a random subset of the training set (``lossless_fraction`` of it) kept as uint8 images: the
  equal-storage baseline.
* ``"real"``: the training set itself (the upper baseline; the datamodule's batches).

Recollection and lossless sources go through a sampling strategy (lossy_memory.memory.sampling): random, active
(per wanted item, the candidate the student and teacher disagree on most: KL(teacher || student)), diverse (MSSS
or DPP over the teacher's penultimate features) or both. Scored strategies choose from a standing pool of
``pool_factor * n`` candidates drawn from the source (``CandidatePool``): each is decoded once, with the frozen
teacher's logits and features cached, and leaves the pool when it is kept for the student or after ``pool_factor``
steps. So every step rescoring the whole pool against the current student costs one student forward pass over it,
and only the items that left are decoded anew (random sampling decodes n per step; the pool, n to 2n); the teacher's
cached outputs are the targets of the ones kept.

An *episode* is one training example shown to the student. The student's test accuracy is measured when the
episode count reaches each of ``eval_episodes`` (logged as ``test/accuracy@<episodes>`` and saved with the run in
``distillation.json``), and training stops at ``max_episodes``. The datamodule's training loader paces the steps
(one step per batch of ``data.batch_size``) and is the data itself only for ``source="real"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from lossy_memory.checkpoints import load_trained_module, provenance, stored_buffer
from lossy_memory.data.batching import to_float_batch
from lossy_memory.memory import BufferSample, ExperienceBuffer, LosslessBuffer, RandomSampling, SamplingStrategy
from lossy_memory.memory.budget import lossless_bits
from lossy_memory.memory.sampling import CandidateScores
from lossy_memory.models.discrete_vae import DiscreteVAE
from lossy_memory.models.reasoner import Reasoner
from lossy_memory.nets import Classifier
from lossy_memory.writers import write_json

SOURCES = ("recollections", "lossless", "real")
TARGETS = ("teacher", "labels")


class CandidatePool:
    """The standing candidates of a scored sampling strategy: ``pool_factor * n`` decoded items, each with the frozen
    teacher's outputs, that leave when kept or after ``pool_factor`` steps (so a candidate is used at most once and
    is at most ``pool_factor`` student updates old when scored)."""

    def __init__(self, pool_factor: int):
        self.pool_factor = int(pool_factor)
        self.items: dict[str, torch.Tensor | None] = {}
        self.age = torch.zeros(0, dtype=torch.long)

    def fill(self, draw: Callable[[int], dict[str, torch.Tensor | None]], n: int) -> None:
        """Top the pool up to pool_factor * n items with ``draw(m)``, m fresh candidates."""
        missing = self.pool_factor * n - len(self.age)
        if missing <= 0:
            return
        fresh = draw(missing)
        self.items = fresh if not self.items else {k: None if v is None else torch.cat([v, fresh[k]]) for k, v in self.items.items()}
        self.age = torch.cat([self.age, torch.zeros(missing, dtype=torch.long)])

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The candidates at ``index``; they leave, the rest grow a step older and the oldest retire."""
        kept = {k: None if v is None else v[index.to(v.device)] for k, v in self.items.items()}
        stay = torch.ones(len(self.age), dtype=torch.bool)
        stay[index.cpu()] = False
        self.age += 1
        stay &= self.age < self.pool_factor
        self.items = {k: None if v is None else v[stay.to(v.device)] for k, v in self.items.items()}
        self.age = self.age[stay]
        return kept


class GenerativeDistiller(L.LightningModule):
    """Trains ``student`` on a source of inputs labelled by the frozen teacher in ``teacher_ckpt`` (module docstring)."""

    def __init__(
        self,
        student: Callable[..., Classifier],
        optimizer: Callable[..., torch.optim.Optimizer],
        teacher_ckpt: str,
        image_shape: Sequence[int],
        num_classes: int,
        source: str = "recollections",
        generator_ckpt: str | None = None,
        sampling: SamplingStrategy | None = None,
        lossless_fraction: float | None = None,
        targets: str = "teacher",
        temperature: float = 1.0,
        eval_episodes: Sequence[int] = (10, 100, 1000, 10000, 100000),
        max_episodes: int = 10000,
        seed: int = 0,
        allow_shortened_checkpoints: bool = False,
    ):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"model.source must be one of {SOURCES}, got {source!r}")
        if targets not in TARGETS:
            raise ValueError(f"model.targets must be one of {TARGETS}, got {targets!r}")
        if not temperature > 0:
            raise ValueError(f"model.temperature must be > 0, got {temperature}")
        if max_episodes < 1 or any(e < 1 for e in eval_episodes):
            raise ValueError(f"model.max_episodes and model.eval_episodes must be >= 1, got {max_episodes} and {list(eval_episodes)}")
        self.image_shape, self.num_classes = tuple(int(s) for s in image_shape), int(num_classes)
        self.source, self.targets, self.temperature = source, targets, float(temperature)
        self.sampling = sampling or RandomSampling()
        if source == "real" and sampling is not None and not isinstance(sampling, RandomSampling):
            raise ValueError("source='real' trains on the datamodule's batches as they come; active or diverse sampling "
                             "needs a buffer (source='lossless' with lossless_fraction=1.0 holds the whole training set)")
        if targets == "labels" and (source == "recollections" and self.sampling.source == "codes"):
            raise ValueError("code sampling draws codes that were never stored, so they have no labels: use targets='teacher'")
        self.max_episodes = int(max_episodes)
        self.pool = CandidatePool(self.sampling.pool_factor)
        self.eval_episodes = sorted({int(e) for e in eval_episodes if e <= max_episodes})
        self.seed = int(seed)
        self.allow_shortened = bool(allow_shortened_checkpoints)
        self.sources: dict[str, dict] = {}  # where the teacher and generator came from (distillation.json)

        self.teacher = self._load_teacher(teacher_ckpt)
        self.generator: DiscreteVAE | None = None
        self.buffer: ExperienceBuffer | None = None
        if source == "recollections":
            if generator_ckpt is None:
                raise ValueError("source='recollections' needs model.generator_ckpt: a DiscreteVAE checkpoint with its buffer "
                                 "(python -m lossy_memory.train +experiment=mnist_generator)")
            self.generator, self.buffer = self._load_generator(generator_ckpt)
        elif source == "lossless":
            if lossless_fraction is None or not 0 < lossless_fraction <= 1:
                raise ValueError(f"source='lossless' needs model.lossless_fraction in (0, 1], got {lossless_fraction}")
        self.lossless_fraction = lossless_fraction
        self.student = student(image_shape=self.image_shape, num_classes=self.num_classes)
        self.optimizer_factory = optimizer
        self.test_accuracy = MulticlassAccuracy(self.num_classes, average="micro")  # the test stage's
        self.episode_accuracy = MulticlassAccuracy(self.num_classes, average="micro")  # at each of eval_episodes
        self.episodes = 0
        self.curve: dict[int, float] = {}

    # -- what is loaded, checked before any training ---------------------------------------------------
    def _load_teacher(self, ckpt_path: str) -> Reasoner:
        teacher, run_config, _ = load_trained_module(ckpt_path, Reasoner, "teacher", "python -m lossy_memory.train +experiment=mnist_teacher",
                                                     self.allow_shortened, "model.allow_shortened_checkpoints")
        self.sources["teacher"] = provenance(ckpt_path, run_config)
        if teacher.num_classes != self.num_classes:
            raise ValueError(f"the teacher {ckpt_path} has {teacher.num_classes} classes but the student and data have "
                             f"{self.num_classes} (data.num_classes): distil within one label space")
        if teacher.image_shape != self.image_shape:
            raise ValueError(f"the teacher {ckpt_path} takes images of shape {list(teacher.image_shape)} but the data has "
                             f"{list(self.image_shape)} (data.image_shape)")
        return teacher

    def _load_generator(self, ckpt_path: str) -> tuple[DiscreteVAE, ExperienceBuffer]:
        generator, run_config, checkpoint = load_trained_module(
            ckpt_path, DiscreteVAE, "generator", "python -m lossy_memory.train +experiment=mnist_generator model.latent.c=<c>",
            self.allow_shortened, "model.allow_shortened_checkpoints")
        self.sources["generator"] = provenance(ckpt_path, run_config)
        if generator.image_shape != self.image_shape:
            raise ValueError(f"the generator {ckpt_path} makes images of shape {list(generator.image_shape)} but the data has "
                             f"{list(self.image_shape)} (data.image_shape): use a generator trained on this dataset")
        buffer = stored_buffer(checkpoint, run_config, ckpt_path)
        if len(buffer) == 0 and self.sampling.source == "buffer":
            raise ValueError(f"the buffer in {ckpt_path} is empty: its run never wrote codes (callbacks=recollection fills it "
                             "on the last training epoch); retrain it, or use code sampling (distill_source=code_sampling)")
        buffer.reseed(self.seed)
        return generator, buffer

    def setup(self, stage: str) -> None:
        if self.source == "lossless" and self.buffer is None:
            self.buffer = self._lossless_subset()

    def _lossless_subset(self) -> LosslessBuffer:
        """A seeded random ``lossless_fraction`` of the training set, as uint8 images with labels."""
        train = self.trainer.datamodule.train_set
        count = max(1, round(self.lossless_fraction * len(train)))
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[:count]
        buffer = LosslessBuffer(self.image_shape, capacity=count, num_classes=self.num_classes, seed=self.seed)
        buffer.add(train.images[chosen], train.labels[chosen], 0)
        return buffer

    # -- storage, counted as in the paper (total: stored items plus the generator's parameters) ---------------
    def storage_report(self) -> dict[str, float]:
        if self.source == "real":
            train = self.trainer.datamodule.train_set
            bits = len(train) * lossless_bits(self.image_shape, self.num_classes, 1)
            return {"storage/items": len(train), "storage/total_bits": bits}
        report = {"storage/items": len(self.buffer), "storage/buffer_bits": self.buffer.bits_used()}
        generator_bits = 0 if self.generator is None else self.generator.storage_report()["parameter_bits"]
        report["storage/total_bits"] = report["storage/buffer_bits"] + generator_bits
        return report

    # -- training ----------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({k: float(v) for k, v in self.storage_report().items()}, step=0)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        n = min(len(batch["x"]), self.max_episodes - self.episodes)
        x, teacher_logits, labels = self.student_batch(batch, n)
        logits = self.student(x)
        if self.targets == "labels":
            loss = F.cross_entropy(logits, labels)
        else:
            t = self.temperature
            loss = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1), log_target=True,
                            reduction="batchmean") * t * t
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n)
        self.episodes += n
        return loss

    def student_batch(self, batch: dict, n: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """n inputs for the student, the teacher's logits on them (targets='teacher') and their labels (targets='labels')."""
        if self.source == "real":
            x, labels = batch["x"][:n], batch["y"][:n]
            with torch.no_grad():
                return x, (self.teacher(x) if self.targets == "teacher" else None), labels
        if not self.sampling.needs:  # random: the draws are the batch
            fresh = self._candidates(n)
            return fresh["images"], fresh["teacher_logits"], fresh["labels"]
        self.pool.fill(self._candidates, n)
        pool = self.pool.items
        said = {}
        with torch.no_grad():
            if "scores" in self.sampling.needs:  # rescored every step: the student changes, the teacher does not
                was = self.student.training
                self.student.eval()
                student_logits = self.student(pool["images"])
                self.student.train(was)
                said["scores"] = F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(pool["teacher_logits"], 1),
                                          log_target=True, reduction="none").sum(1)
            if "features" in self.sampling.needs:
                said["features"] = pool["features"]
        candidates = BufferSample(pool["images"], pool["labels"], None, None)
        kept = self.pool.take(self.sampling.choose(candidates, n, lambda _: CandidateScores(**said)))
        return kept["images"], kept["teacher_logits"], kept["labels"]

    def _candidates(self, m: int) -> dict[str, torch.Tensor | None]:
        """m fresh draws from the source, decoded, with the teacher's logits (and features, if the strategy needs them)."""
        drawn = self.buffer.sample(m) if self.sampling.source == "buffer" else BufferSample(self.buffer.sample_codes(m), None, None, None)
        with torch.no_grad():
            images = self.buffer.decode(self.generator.decode if self.generator else None, drawn.data).to(self.device)
            return {"images": images, "teacher_logits": self.teacher(images),
                    "features": self.teacher.net.embed(images) if "features" in self.sampling.needs else None,
                    "labels": None if drawn.labels is None else drawn.labels.to(self.device)}

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        while self.eval_episodes and self.episodes >= self.eval_episodes[0]:
            point = self.eval_episodes.pop(0)
            accuracy = self.student_test_accuracy()
            self.curve[point] = accuracy
            self.log(f"test/accuracy@{point}", accuracy)
        if self.episodes >= self.max_episodes:
            self.trainer.should_stop = True

    def student_test_accuracy(self) -> float:
        """The student's accuracy on the whole test split, now (eval mode, restored after)."""
        was = self.student.training
        self.student.eval()
        self.episode_accuracy.reset()
        with torch.no_grad():
            for batch in self.trainer.datamodule.test_dataloader()[0]:
                batch = to_float_batch({k: v.to(self.device) for k, v in batch.items()})
                self.episode_accuracy.update(self.student(batch["x"]), batch["y"])
        self.student.train(was)
        return float(self.episode_accuracy.compute())

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        record = {"source": self.source, "sampling": type(self.sampling).__name__, "sampling_source": self.sampling.source,
                  "targets": self.targets, "lossless_fraction": self.lossless_fraction, "episodes": self.episodes,
                  "generator_bits_per_item": None if self.generator is None else self.generator.latent.bits_per_item,
                  "accuracy_at": {str(k): v for k, v in self.curve.items()}, **self.storage_report(), "sources": self.sources}
        Path(self.trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(self.trainer.default_root_dir) / "distillation.json", record)

    # -- evaluation of the student ------------------------------------------------------------------------
    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.test_accuracy.update(self.student(batch["x"]), batch["y"])
        self.log("test/accuracy", self.test_accuracy, on_epoch=True, batch_size=len(batch["x"]))

    def configure_optimizers(self):
        return self.optimizer_factory(params=self.student.parameters())

    # Teacher and generator are fixed: keep them in eval mode whatever Lightning does to the module.
    def on_train_epoch_start(self) -> None:
        self.teacher.eval()
        if self.generator is not None:
            self.generator.eval()

