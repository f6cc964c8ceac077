"""Generative distillation: student training examples/s for each way of choosing recollections.

One GenerativeDistiller per strategy (LeNet teacher -> LeNet student, the 10x generator: c=168 l=2 with 40 filters,
a buffer of 50,000 codes, batch 10 as in ``+experiment=mnist_distill``); a step is what ``training_step`` does:
random sampling draws and decodes 10; active/diverse top up their standing pool of 100 decoded candidates (the kept
and the retired are redrawn), rescore it against the student and keep 10; then one student update on the teacher's
soft targets. Untrained weights and random codes: the cost does not depend on what the networks have learned.
Strategies take turns step by step, so all see the same machine load; figures are medians over the timed steps.
The project's bar: active and diverse cost at most 3x random buffer sampling per example.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from lossy_memory.models import GenerativeDistiller
from lossy_memory.runtime import CONFIG_DIR, register_resolvers

BATCH, ITEMS, WARMUP, TIMED = 10, 50_000, 5, 60
STRATEGIES = ("code_sampling", "buffer_sampling", "active", "diverse", "active_diverse")
BAR = 3.0


def compose_config(overrides: list[str], folder: Path):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir, cfg.paths.artifact_dir = str(folder), str(folder), str(folder)
        del cfg.hydra
    return cfg


def write_artifacts(folder: Path) -> None:
    """A teacher and a c=168 generator whose buffer holds 50,000 random codes, as the train command would save them."""
    teacher_cfg = compose_config(["+experiment=mnist_teacher"], folder)
    teacher = instantiate(teacher_cfg.model)
    torch.save({"state_dict": teacher.state_dict(), "run_config": OmegaConf.to_container(teacher_cfg, resolve=True)},
               folder / "mnist_teacher.ckpt")
    generator_cfg = compose_config(["+experiment=mnist_generator", "model.latent.c=168", "model.hidden=40"], folder)
    generator = instantiate(generator_cfg.model)
    buffer = instantiate(generator_cfg.buffer.store)
    buffer.add(torch.randint(0, 2, (ITEMS, 168)), torch.randint(0, 10, (ITEMS,)), 0)
    torch.save({"state_dict": generator.state_dict(), "run_config": OmegaConf.to_container(generator_cfg, resolve=True),
                "callbacks": {"RecollectionWriter": {"ranks": [buffer.state_dict()]}}}, folder / "mnist_generator_c168_l2.ckpt")


def step(model: GenerativeDistiller, optimizer: torch.optim.Optimizer) -> None:
    x, teacher_logits, _ = model.student_batch({}, BATCH)
    loss = F.kl_div(F.log_softmax(model.student(x), 1), F.log_softmax(teacher_logits, 1), log_target=True, reduction="batchmean")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_artifacts(folder)
        models = {}
        for name in STRATEGIES:
            cfg = compose_config(["+experiment=mnist_distill", f"distill_source={name}"], folder)
            model = instantiate(cfg.model)
            models[name] = (model, torch.optim.Adam(model.student.parameters(), lr=1e-3))
    times: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    for round_ in range(WARMUP + TIMED):
        for name, (model, optimizer) in models.items():
            start = time.perf_counter()
            step(model, optimizer)
            if round_ >= WARMUP:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["buffer_sampling"])
    print(f"student steps of {BATCH} examples, c=168 generator (40 filters), buffer of {ITEMS:,} codes, pool_factor 10, "
          f"{torch.get_num_threads()} threads, median of {TIMED} interleaved steps")
    print(f"{'strategy':<18}{'examples/s':>12}{'x buffer sampling':>20}")
    for name in STRATEGIES:
        median = statistics.median(times[name])
        ratio = median / base
        verdict = "" if name in ("code_sampling", "buffer_sampling") else ("  ok" if ratio <= BAR else f"  ABOVE the {BAR:g}x bar")
        print(f"{name:<18}{BATCH / median:>12,.0f}{ratio:>19.2f}x{verdict}")


if __name__ == "__main__":
    main()
