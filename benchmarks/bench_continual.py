"""Continual training speed: the framework against plain PyTorch loops doing the same work, and per-step costs.

**Whole stream against a plain loop** (the bars): 1 CPU thread, split MNIST (real data when ``LOSSY_MEMORY_DATA_DIR``
holds it), MLP 784-400-400-10, SGD lr 0.01, incoming batch 10, one pass, a memory of 200 lossless images' bits.
The framework runs through ``lossy_memory.train.train`` (the code path of ``python -m lossy_memory.train``: Hydra
config, Lightning Trainer, ContinualLearner, ``ContinualStep``) and its speed is incoming examples / ``wall_time_s`` of
``continual.json`` (the evaluations at task boundaries included). Beside it, a plain loop of a few dozen lines does the
same work on the same batches (same sampler), timed twice: with the accuracy matrix the framework makes (every task's
test set, task-agnostic and task-aware, before training and after each task: "plain + R", the same work) and training
alone ("plain"). The loops: fine-tuning; lossless replay (10 incoming + 10 replayed images a step,
a reservoir of float images); GEM (per-task memories, the same QP solver, qpsolvers/quadprog, on 3 tasks);
recollection replay N=1 with a c=38 generator (``RECOLLECTION``: the memory these figures were built around; the
DiscreteVAE's update on incoming + recalled images with the anchor to the last boundary's snapshot, the decode, the
classifier's update, the encode for the reservoir; the first ``RECOLLECTION_BATCHES`` incoming batches). Bar: framework / plain <= 1.3x.

**Per-step costs** (random MNIST-shaped data, the split-MNIST settings of the experiment: MLP 2x100, budget 10):
each loop drives ``ContinualStep`` directly, one step per loop in turn so all see the same load; medians over the
timed steps. The generator's share is measured as 1 - (the same loop with the generator frozen) / (the loop). Bars
from earlier issues: recollection replay (N=1) <= 2x lossless replay per incoming example; cost at 100% / 10%
buffer fill <= 1.2x. A shorter table times the ``cifar100_lifelong`` settings (reduced ResNet-18, c=620).

**torch.compile** of the step's two networks, eager against compiled on the same batches (after a warm-up that
includes compiling): the whole-stream classifier (MLP 400x400, SGD, batch 20: 10 incoming + 10 replayed) and the
c=38 generator (DiscreteVAE, Adam, batch 20), ms per training step.

**A busy GPU** (only when one is visible): the whole split-MNIST stream, lossless and recollection replay, as incoming
batches/s of one process alone and of 8 processes side by side (1 CPU thread each). Bars: alone >= 1,000 / 400
steps/s; side by side, each at least half that.

Everything runs on the GPU when one is visible, else on the CPU.
"""

from __future__ import annotations

import copy
import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from qpsolvers import solve_qp

from lossy_memory.memory import EpisodicMemory
from lossy_memory.runtime import CONFIG_DIR, register_resolvers
from lossy_memory.strategies import ContinualStep

BATCH, WARMUP, TIMED = 10, 5, 60
RATIO_BAR, FILL_BAR, PLAIN_BAR = 2.0, 1.2, 1.3
FILL_BUDGET = 200
RECOLLECTION_BATCHES, GEM_TASKS = 400, 3
# The recollection memory these figures were built around, whatever a stream's defaults are now: c=38 two-valued
# variables, c*l/4 filters, random initial weights, incoming images as they are (what the plain loops do too);
# TUNED adds the width and reconstruct_incoming split MNIST's defaults use.
RECOLLECTION = ("~recollection_memory", "+recollection_memory={c:38,l:2}")
STREAM = ["+experiment=mnist_split_lifelong", "classifier.hidden=[400,400]", "model.optimizer.lr=0.01",
          "memory.lossless_equivalent=200", "+trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null",
          "callbacks.model_checkpoint=null", "logger=csv", "+trainer.enable_model_summary=false", "seed=12345", *RECOLLECTION]
TUNED = ("memory.generator.hidden=48", "memory.reconstruct_incoming=true")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Setting:
    experiment: str
    image_shape: tuple[int, int, int]
    num_classes: int
    task_classes: tuple[tuple[int, ...], ...]
    recollection: tuple[str, ...]  # the recollection memory timed


SPLIT_MNIST = Setting("mnist_split_lifelong", (1, 28, 28), 10, tuple((2 * t, 2 * t + 1) for t in range(5)), RECOLLECTION)
CIFAR100 = Setting("cifar100_lifelong", (3, 32, 32), 100, tuple(tuple(range(5 * t, 5 * t + 5)) for t in range(20)),
                   ("~recollection_memory", "+recollection_memory={c:620,l:2}"))


def compose_config(overrides: list[str], output_dir: Path = Path("/tmp/bench_continual")):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        if os.environ.get("LOSSY_MEMORY_DATA_DIR"):
            cfg.paths.data_dir = os.environ["LOSSY_MEMORY_DATA_DIR"]
        cfg.trainer.accelerator = "gpu" if DEVICE.type == "cuda" else "cpu"
        del cfg.hydra
    return cfg


# -- whole stream: the framework against plain loops ----------------------------------------------------------------------
def framework_rate(overrides: list[str]) -> tuple[float, float]:
    """(incoming examples / s, final average accuracy) of ``lossy_memory.train`` on the stream."""
    from lossy_memory.train import train

    with tempfile.TemporaryDirectory() as folder:
        train(compose_config([*STREAM, *overrides], Path(folder) / "run"))
        metrics = json.loads((Path(folder) / "run" / "continual.json").read_text())["metrics"]
    return metrics["examples_seen"] / metrics["wall_time_s"], metrics.get("final_average_accuracy", float("nan"))


def stream_batches(cfg, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(uint8 images, labels, task) of the stream's incoming batches, in the framework's order (same sampler, one
    batch per step)."""
    from lossy_memory.data.streams import TaskOrderBatchSampler

    data = instantiate(cfg.data)
    data.setup("fit")
    sampler = TaskOrderBatchSampler(data._train_bounds, data.batch_size, data.seed)
    out = []
    for index in sampler:
        index = torch.tensor(index)
        out.append((data.train_set.images[index], data.train_set.labels[index], int(data.train_set.tasks[index[0]])))
        if limit is not None and len(out) == limit:
            break
    return out


def plain_rate(loop, cfg, batches, evaluate: bool) -> float:
    """Incoming examples / s of a plain ``loop`` over ``batches``; with ``evaluate``, it also makes the framework's
    accuracy matrix as a plain loop would (``plain_evaluations``)."""
    torch.manual_seed(0)
    net = instantiate(cfg.classifier)(image_shape=SPLIT_MNIST.image_shape, num_classes=10).to(DEVICE)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.model.optimizer.lr)
    test_sets = plain_test_sets(cfg) if evaluate else None
    start = time.perf_counter()
    loop(net, optimizer, batches if test_sets is None else plain_evaluations(batches, net, test_sets), cfg)
    synchronize()
    return sum(len(y) for _, y, _ in batches) / (time.perf_counter() - start)


def plain_test_sets(cfg) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels, the task's classes) of every task's test set, on the device."""
    data = instantiate(cfg.data)
    data.setup("fit")
    return [(test.images.to(DEVICE), test.labels.to(DEVICE), torch.tensor(classes, device=DEVICE))
            for test, classes in ((data.task_test_set(t), data.task_classes[t]) for t in range(data.num_tasks))]


def plain_evaluations(batches, net, test_sets, batch_size: int = 1000):
    """The batches, with the work of the framework's accuracy matrix R where the framework does it: every task's test
    set, task-agnostic and task-aware accuracy (``model.eval_batch_size`` 1000), before the first batch and after each
    task's last."""

    @torch.no_grad()
    def evaluate():  # the counts are the work being timed; the bench reports no accuracy from them
        for images, labels, classes in test_sets:
            agnostic = aware = 0
            for start in range(0, len(labels), batch_size):
                logits, y = net(images[start : start + batch_size].float() / 255), labels[start : start + batch_size]
                agnostic += int((logits.argmax(1) == y).sum())
                aware += int((classes[logits[:, classes].argmax(1)] == y).sum())

    evaluate()
    previous = None
    for batch in batches:
        if previous is not None and batch[2] != previous:
            evaluate()
        previous = batch[2]
        yield batch
    evaluate()


def plain_finetune(net, optimizer, batches, cfg) -> None:
    for images, y, _ in batches:
        x, y = images.to(DEVICE).float() / 255, y.to(DEVICE)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def plain_replay(net, optimizer, batches, cfg) -> None:
    capacity, seen = 200, 0
    memory_x, memory_y = torch.zeros(capacity, 1, 28, 28, device=DEVICE), torch.zeros(capacity, dtype=torch.long, device=DEVICE)
    for images, y, _ in batches:
        x, y = images.to(DEVICE).float() / 255, y.to(DEVICE)
        xs, ys = x, y
        if seen:
            drawn = torch.randint(min(seen, capacity), (len(x),), device=DEVICE)
            xs, ys = torch.cat([x, memory_x[drawn]]), torch.cat([y, memory_y[drawn]])
        loss = F.cross_entropy(net(xs), ys)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for i in range(len(x)):  # reservoir sampling
            j = seen if seen < capacity else random.randint(0, seen)
            if j < capacity:
                memory_x[j], memory_y[j] = x[i], y[i]
            seen += 1


def plain_gem(net, optimizer, batches, cfg) -> None:
    per_task = 200 // len(SPLIT_MNIST.task_classes)
    memories: dict[int, list[torch.Tensor]] = {}
    params = list(net.parameters())

    def flat_grad(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    for images, y, task in batches:
        x, y = images.to(DEVICE).float() / 255, y.to(DEVICE)
        rows = [flat_grad(F.cross_entropy(net(mx), my)) for k, (mx, my) in memories.items() if k < task]
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        if rows:
            G = torch.stack(rows)
            g = torch.cat([p.grad.flatten() for p in params])
            if (G @ g < 0).any():
                Gn, gn = G.double().cpu().numpy(), g.double().cpu().numpy()
                P = Gn @ Gn.T
                v = solve_qp(0.5 * (P + P.T) + 1e-3 * np.eye(len(rows)), Gn @ gn, lb=np.full(len(rows), 0.5), solver="quadprog")
                g = torch.from_numpy(v @ Gn + gn).to(g)
                offset = 0
                for p in params:
                    p.grad.copy_(g[offset : offset + p.numel()].view_as(p))
                    offset += p.numel()
        optimizer.step()
        mx, my = memories.get(task, (x[:0], y[:0]))
        memories[task] = (torch.cat([mx, x])[:per_task], torch.cat([my, y])[:per_task])  # GEM keeps a task's first items


def plain_recollection(net, optimizer, batches, cfg) -> None:
    vae = instantiate(cfg.memory.generator).to(DEVICE)
    generator_optimizer = vae.optimizer_factory(params=vae.parameters())
    capacity = 200 * (784 * 8 + 16) // (vae.latent.c + 16)  # the budget over c bits + 8-bit label + 8-bit task id
    codes = torch.zeros(capacity, vae.latent.c, dtype=torch.long, device=DEVICE)
    labels, tasks = torch.zeros(capacity, dtype=torch.long, device=DEVICE), torch.zeros(capacity, dtype=torch.long, device=DEVICE)
    seen, snapshot, snapshot_task, current = 0, None, -1, 0
    for images, y, task in batches:
        if task != current:  # the anchor: a frozen copy at the boundary
            snapshot, snapshot_task, current = copy.deepcopy(vae).eval().requires_grad_(False), current, task
        x, y = images.to(DEVICE).float() / 255, y.to(DEVICE)
        rows, anchor = [x], None
        if seen:
            drawn = torch.randint(min(seen, capacity), (len(x),), device=DEVICE)
            c, old = codes[drawn], tasks[drawn] <= snapshot_task
            with torch.no_grad():
                vae.eval()
                recalled = vae.decode(c)
                if snapshot is not None and old.any():
                    recalled[old] = snapshot.decode(c[old])
                vae.train()
            rows.append(recalled)
            if old.any():
                anchor = vae.reconstruction_error(vae.decoder(vae.latent.embed(c[old])), recalled[old]).mean()
        batch = torch.cat(rows)
        x_hat, kl = vae(batch)
        loss = vae.reconstruction_error(x_hat, batch).mean() + vae.kl_weight * kl.mean() + (0 if anchor is None else anchor)
        generator_optimizer.zero_grad()
        loss.backward()
        generator_optimizer.step()
        replay_x, replay_y = x, y
        if seen:
            drawn = torch.randint(min(seen, capacity), (len(x),), device=DEVICE)
            with torch.no_grad():
                vae.eval()
                replay_x, replay_y = torch.cat([x, vae.decode(codes[drawn])]), torch.cat([y, labels[drawn]])
                vae.train()
        loss = F.cross_entropy(net(replay_x), replay_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            vae.eval()
            new = vae.encode(x)
            vae.train()
        for i in range(len(x)):
            j = seen if seen < capacity else random.randint(0, seen)
            if j < capacity:
                codes[j], labels[j], tasks[j] = new[i], y[i], task
            seen += 1


def whole_stream() -> None:
    runs = [  # name, framework overrides, plain loop, batches (None: the whole stream)
        ("fine-tuning", ["strategy=finetune"], plain_finetune, None),
        ("lossless replay", ["memory=lossless"], plain_replay, None),
        (f"GEM ({GEM_TASKS} tasks)", ["strategy=gem", "memory=lossless", "memory.layout=per_task",
                                      f"data.num_tasks={GEM_TASKS}"], plain_gem, None),
        (f"recollection N=1 ({RECOLLECTION_BATCHES} batches)", ["memory=recollection", "memory.lossless_equivalent=200",
                                                               f"+trainer.limit_train_batches={RECOLLECTION_BATCHES // 25}"],
         plain_recollection, RECOLLECTION_BATCHES),
    ]
    print(f"whole stream, split MNIST, MLP 400x400, batch {BATCH}, 200 images' bits, on {DEVICE}, {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'run':<36}{'framework ex/s':>16}{'plain + R':>11}{'ratio':>7}{'plain':>9}{'ratio':>7}  bar <= {PLAIN_BAR:g}x")
    for name, overrides, loop, limit in runs:
        framework, _ = framework_rate(overrides)
        cfg = compose_config([*STREAM, *overrides])
        batches = stream_batches(cfg, limit)
        same_work, training = plain_rate(loop, cfg, batches, evaluate=True), plain_rate(loop, cfg, batches, evaluate=False)
        print(f"{name:<36}{framework:>16.0f}{same_work:>11.0f}{same_work / framework:>6.2f}x{training:>9.0f}{training / framework:>6.2f}x  "
              f"{'OK' if same_work / framework <= PLAIN_BAR else 'ABOVE BAR'} (training alone: "
              f"{'OK' if training / framework <= PLAIN_BAR else 'ABOVE BAR'})", flush=True)
    print("  plain + R: the plain loop also makes the accuracy matrix the framework makes (every task's test set before "
          "training and after each task); plain: training alone")


# -- per-step costs ----------------------------------------------------------------------------------------------------
class Learner:
    """One strategy with its classifier, optimizers and memory, stepping through ``ContinualStep`` (the step the
    LightningModule runs), without Lightning around it."""

    def __init__(self, strategy: str, memory: str | None, steps: int, budget: float = 10, fill: float | None = 1.0, seed: int = 0,
                 setting: Setting = SPLIT_MNIST, overrides: tuple[str, ...] = ()):
        config = [f"+experiment={setting.experiment}", f"data.batch_size={BATCH}", f"strategy={strategy}", f"strategy.steps={steps}",
                  f"seed={seed}", *setting.recollection, *overrides]
        if memory is not None:
            config += [f"memory={memory}", f"memory.lossless_equivalent={budget}"]
        cfg = compose_config(config)
        torch.manual_seed(seed)
        strategy_ = instantiate(cfg.strategy)
        self.step = ContinualStep(strategy_, instantiate(cfg.memory) if strategy_.uses_memory else None, cfg.model.generator_steps)
        self.memory = self.step.memory
        net = instantiate(cfg.classifier)(image_shape=setting.image_shape, num_classes=setting.num_classes).to(DEVICE)
        if self.memory is not None:
            self.memory.to(DEVICE)
        self.step.prepare(net, setting.image_shape, setting.num_classes, setting.task_classes)
        self.step.use_optimizers(self.step.optimizers(instantiate(cfg.model.optimizer)))
        if self.memory is not None and fill:
            fill_memory(self.memory, fill, setting.image_shape)
        self.step.end_task(0)  # with a generator, its snapshot: the anchor to old decodings is part of every step
        self.step.begin_task(1)
        net.train()

    @property
    def fill(self) -> float:
        return 0.0 if self.memory is None else len(self.memory) / self.memory.capacity


def fill_memory(memory: EpisodicMemory, fraction: float, image_shape: tuple[int, int, int]) -> None:
    """Put round(fraction * capacity) items of task 0 straight into the store (random codes or images: the cost does
    not depend on their content)."""
    store = memory.stores[0]
    n = max(1, round(fraction * store.capacity))
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (n,), generator=generator)
    if memory.kind == "recollection":
        latent = memory.generator.latent
        store.add(torch.randint(0, latent.l, (n, latent.c), generator=generator), labels, 0)
    else:
        store.add(torch.rand(n, *image_shape, generator=generator), labels, 0)


def batches(count: int, setting: Setting = SPLIT_MNIST) -> list[dict[str, torch.Tensor]]:
    """Random incoming batches of task 1 in the setting's image shape and classes, on the device."""
    generator = torch.Generator().manual_seed(0)
    classes = torch.tensor(setting.task_classes[1])
    return [{"x": torch.rand(BATCH, *setting.image_shape, generator=generator).to(DEVICE),
             "y": classes[torch.randint(0, len(classes), (BATCH,), generator=generator)].to(DEVICE),
             "task": torch.ones(BATCH, dtype=torch.long, device=DEVICE)} for _ in range(count)]


def time_interleaved(loops: dict[str, Learner], stream: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Median seconds per step of each loop, one step per loop in turn."""
    times: dict[str, list[float]] = {name: [] for name in loops}
    for round_, batch in enumerate(stream):
        for name, loop in loops.items():
            start = time.perf_counter()
            loop.step(batch)
            synchronize()
            if round_ >= WARMUP:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cifar100_ratio() -> None:
    loops = {"lossless N=1": Learner("replay", "lossless", 1, budget=200, setting=CIFAR100),
             "recollection N=1": Learner("replay", "recollection_c620", 1, budget=200, setting=CIFAR100)}
    median = time_interleaved(loops, batches(WARMUP + TIMED // 3, CIFAR100))
    print(f"\ncifar100_lifelong settings (reduced ResNet-18, 3x32x32, budget 200, c=620 l=2 generator) on {DEVICE}; "
          f"median of {TIMED // 3} steps")
    for name in loops:
        print(f"{name:<30}{BATCH / median[name]:>12.1f} examples/s{1000 * median[name] / BATCH:>10.2f} ms/example")
    ratio = median["recollection N=1"] / median["lossless N=1"]
    print(f"recollection(N=1) / lossless(N=1) per incoming example: {ratio:.2f}x, bar <= {RATIO_BAR:g}x: "
          f"{'OK' if ratio <= RATIO_BAR else 'ABOVE BAR'}")


def per_step() -> None:
    loops = {
        "online N=1": Learner("finetune", None, 1),
        "lossless N=1": Learner("replay", "lossless", 1),
        "lossless N=10": Learner("replay", "lossless", 10),
        "recollection N=1": Learner("replay", "recollection", 1),
        "recollection N=1, frozen generator": Learner("replay", "recollection", 1, overrides=("model.generator_steps=0",)),
        "recollection N=10": Learner("replay", "recollection", 10),
        "recollection N=1, tuned": Learner("replay", "recollection", 1, overrides=TUNED),
        "recollection N=1, 10% full": Learner("replay", "recollection", 1, budget=FILL_BUDGET, fill=0.10),
        "recollection N=1, 100% full": Learner("replay", "recollection", 1, budget=FILL_BUDGET, fill=1.0),
    }
    fills_before = {name: loop.fill for name, loop in loops.items()}
    median = time_interleaved(loops, batches(WARMUP + TIMED))
    print(f"\nper step, split-MNIST settings (MLP 2x100, batch {BATCH}, c=38 l=2 generator), random data, on {DEVICE}; median of "
          f"{TIMED} interleaved steps a loop after {WARMUP} warm-up")
    print(f"{'loop':<38}{'items':>8}{'fill':>13}{'examples/s':>12}{'ms/example':>12}")
    for name, loop in loops.items():
        capacity = loop.memory.capacity if loop.memory is not None else 0
        fill = f"{fills_before[name]:.0%}->{loop.fill:.0%}" if loop.memory is not None else "-"
        print(f"{name:<38}{capacity:>8}{fill:>13}{BATCH / median[name]:>12.1f}{1000 * median[name] / BATCH:>12.2f}")
    ratio = median["recollection N=1"] / median["lossless N=1"]
    share = 1 - median["recollection N=1, frozen generator"] / median["recollection N=1"]
    print(f"recollection(N=1) / lossless(N=1) per incoming example: {ratio:.2f}x (bar <= {RATIO_BAR:g}x: "
          f"{'OK' if ratio <= RATIO_BAR else 'ABOVE BAR'}); the generator's update is {share:.0%} of the step; without it "
          f"{median['recollection N=1, frozen generator'] / median['lossless N=1']:.2f}x")
    print(f"recollection(N=1), tuned ({' '.join(TUNED)}) / lossless(N=1): {median['recollection N=1, tuned'] / median['lossless N=1']:.2f}x")
    growth = median["recollection N=1, 100% full"] / median["recollection N=1, 10% full"]
    print(f"recollection(N=1) cost at 100% / at 10% buffer fill: {growth:.2f}x, bar <= {FILL_BAR:g}x: "
          f"{'OK' if growth <= FILL_BAR else 'ABOVE BAR'}")


# -- a busy GPU: one process, then several side by side ----------------------------------------------------------------
GPU_STEPS_BAR = {"lossless": 1000.0, "recollection": 400.0}  # incoming batches/s of one process; side by side: half each
RUNS = {"lossless": ["memory=lossless"], "recollection": ["memory=recollection"]}


def one_run(kind: str) -> None:
    """A subprocess's work: the whole split-MNIST stream through ``lossy_memory.train``; prints incoming batches/s."""
    rate, _ = framework_rate(RUNS[kind])
    print(f"STEPS_PER_S {rate / BATCH:.1f}", flush=True)


def launch(kind: str, processes: int) -> list[float]:
    """Incoming batches/s of each of ``processes`` runs started together (1 CPU thread each, as ``cpu_threads`` sets)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_continual", "--one", kind], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
            for _ in range(processes)]
    rates = []
    for job in jobs:
        out, _ = job.communicate()
        lines = [line for line in out.splitlines() if line.startswith("STEPS_PER_S ")]
        if job.returncode != 0 or not lines:
            raise RuntimeError(f"a side-by-side {kind} run failed (exit {job.returncode}): {out[-500:]}")
        rates.append(float(lines[-1].split()[1]))
    return rates


def compiled_networks() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [*STREAM, "memory=recollection"])
    x, y = torch.rand(2 * BATCH, 1, 28, 28, device=DEVICE), torch.randint(0, 10, (2 * BATCH,), device=DEVICE)

    def classifier_step(net, forward):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

        def step():
            loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    def generator_step(vae, forward):
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)

        def step():
            x_hat, kl = forward(x)
            loss = (x_hat - x).abs().flatten(1).sum(1).mean() + 0.01 * kl.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    print(f"\ntorch.compile of the step's networks on {DEVICE}, batch {2 * BATCH}, ms per training step (eager / compiled)")
    for name, build, make_step, count in (
            ("classifier MLP 400x400", lambda: instantiate(cfg.classifier)(image_shape=(1, 28, 28), num_classes=10), classifier_step, 2000),
            ("generator c=38, 19 filters", lambda: instantiate(cfg.memory.generator), generator_step, 300)):
        times = []
        for compiled in (False, True):
            torch.manual_seed(0)
            net = build().to(DEVICE)
            step = make_step(net, torch.compile(net) if compiled else net)
            for _ in range(30):  # warm-up, compiling included
                step()
            synchronize()
            start = time.perf_counter()
            for _ in range(count):
                step()
            synchronize()
            times.append(1000 * (time.perf_counter() - start) / count)
        print(f"{name:<30}{times[0]:>8.3f} / {times[1]:.3f} ms: compiled {times[0] / times[1]:.2f}x eager's speed", flush=True)


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def side_by_side(processes: int = 8) -> None:
    print(f"\nsplit MNIST, whole stream through lossy_memory.train on {DEVICE} (MLP 400x400, batch {BATCH}, 200 images' bits), "
          f"incoming batches/s: one process alone, then {processes} side by side")
    for kind in RUNS:
        alone, together = launch(kind, 1)[0], launch(kind, processes)
        bar = GPU_STEPS_BAR[kind]
        print(f"{kind:<14} alone {alone:8.0f} (bar >= {bar:g}: {'OK' if alone >= bar else 'BELOW BAR'}); side by side "
              f"min {min(together):.0f} / mean {statistics.mean(together):.0f} (bar >= {bar / 2:g} each: "
              f"{'OK' if min(together) >= bar / 2 else 'BELOW BAR'})", flush=True)


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole_stream()
        per_step()
        cifar100_ratio()
        compiled_networks()
        if DEVICE.type == "cuda":
            side_by_side()
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--one"]:
        torch.set_num_threads(1)
        one_run(sys.argv[2])
    else:
        main()
