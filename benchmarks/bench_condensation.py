"""Gradient matching speed by path, and the memory Dataset Distillation's unrolling costs.

Gradient matching (``GradientMatchingCondenser``, the reference's MNIST ConvNet: first convolution padded by 3, as
``mnist_condense`` runs it; real MNIST, batch_real 256): seconds per outer iteration
at 1 and 10 images per class for (r) the reference's algorithm written as a plain per-class loop (its own distance, no
options: the speed to reach), (a) the condenser's per-class loop in float32, (b) the path batched across classes
(``torch.func.vmap`` of ``grad``), (c) bfloat16 (``autocast_dtype``: the loop's first-order passes on a bfloat16 copy
of the network, the rest under autocast; the batched path all under autocast) and (d) the class loop with
``compile=True`` (the passes differentiated once go through ``torch.compile``; the first iteration, printed apart,
includes compiling), each with the mean match loss of its first step and of its last. Every path starts from the same
synthetic set and sees the same fresh networks and real batches (same seeds): the first step's loss compares
precisions on identical inputs; later steps also carry how far the paths' images and inner-loop networks have drifted
apart (50 inner epochs amplify rounding: the compiled float32 loop drifts too). At 1 image per class an outer iteration is one matching step plus nothing (the reference skips the network
update after the last step), and ``ITERATIONS_1`` whole iterations are timed. At 10 images per class a full outer
iteration (10 matching steps, 9 x 50 inner epochs) takes minutes on one CPU core, so ``STEPS_10`` matching steps and
inner updates are timed and the iteration is assembled from them: 10 x matching step + 9 x inner update (printed as
such).

Dataset Distillation (``UnrolledDatasetDistiller``, LeNet, 10 images per step, real batch 1024): peak memory of one
meta-gradient (unrolled forward + backward) as the number of unrolled steps grows. Each size runs in a fresh subprocess; on CPU
the peak is the resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs just before the meta-step)
minus the resident set before it; on GPU, ``torch.cuda.max_memory_allocated`` above the allocation before. It should grow linearly: every unrolled step keeps its graph.

Single-threaded (``torch.set_num_threads(1)``), as the issue's bars are per core; the load average is printed, since
the machine is shared.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from lossy_memory.data import MNISTDataModule
from lossy_memory.models.gradient_matching import GradientMatchingCondenser
from lossy_memory.nets import ConvNet
from lossy_memory.runtime import register_resolvers

ITERATIONS_1 = int(os.environ.get("BENCH_GM_ITERATIONS_1", 3))
STEPS_10 = int(os.environ.get("BENCH_GM_STEPS_10", 2))
UNROLLED_STEPS = [int(s) for s in os.environ.get("BENCH_DD_STEPS", "1,10,30,100").split(",")]
REFERENCE_MNIST_CONVNET = functools.partial(ConvNet, first_padding=3)  # conf/classifier/convnet_mnist.yaml
PATHS = {  # name: (batched, autocast dtype, compile); "(r)": ReferenceStyleLoop
    "(r) reference-style loop": (False, None, False),
    "(a) loop fp32": (False, None, False),
    "(b) batched fp32": (True, None, False),
    "(c) loop bf16": (False, "bfloat16", False),
    "(c) batched bf16": (True, "bfloat16", False),
    "(d) loop fp32 compiled": (False, None, True),
    "(d) loop bf16 compiled": (False, "bfloat16", True),
}


def mnist_train():
    register_resolvers()
    data_dir = os.environ.get("LOSSY_MEMORY_DATA_DIR", "data")
    datamodule = MNISTDataModule(data_dir, download=False)
    datamodule.setup("fit")
    return datamodule.train_set.images, datamodule.train_set.labels


class ReferenceStyleLoop(GradientMatchingCondenser):
    """The matching loss as the reference writes it: a plain loop over classes, labels made per class, gradients
    listed in parameter order, its layer-wise distance inline; everything else (draws, inner loop) the condenser's."""

    def match_loss(self, net, real, synthetic, passes=None):
        params = list(net.parameters())
        loss = torch.tensor(0.0, device=real.device)
        for c in range(len(real)):
            l_real = F.cross_entropy(net(real[c]), torch.ones(len(real[c]), dtype=torch.long, device=real.device) * c)
            g_real = [g.detach().clone() for g in torch.autograd.grad(l_real, params)]
            l_syn = F.cross_entropy(net(synthetic[c]), torch.ones(len(synthetic[c]), dtype=torch.long, device=real.device) * c)
            g_syn = torch.autograd.grad(l_syn, params, create_graph=True)
            for gs, gr in zip(g_syn, g_real):
                if gr.dim() == 1:  # the reference skips biases and norm scales
                    continue
                gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
                loss = loss + torch.sum(1 - torch.sum(gr * gs, dim=-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6))
        return loss


def condenser(ipc: int, batched: bool, dtype: str | None, compile: bool, images, labels, kind=GradientMatchingCondenser):
    model = kind(REFERENCE_MNIST_CONVNET, (1, 28, 28), 10, images_per_class=ipc, batched=batched, autocast_dtype=dtype,
                                      compile=compile, seed=0)
    model.attach_real_data(images, labels)
    return model


def paths(ipc: int, images, labels):
    """(name, condenser, its image optimizer) for every path, each starting from the same seed."""
    for name, (batched, dtype, compile) in PATHS.items():
        kind = ReferenceStyleLoop if name.startswith("(r)") else GradientMatchingCondenser
        model = condenser(ipc, batched, dtype, compile, images, labels, kind)
        torch.manual_seed(0)
        yield name, model, model.configure_optimizers()


def time_ipc1(images, labels) -> dict[str, tuple[float, float, float]]:
    results = {}
    for name, model, optimizer in paths(1, images, labels):
        seconds, losses = [], []
        for _ in range(ITERATIONS_1):
            start = time.perf_counter()
            losses.append(model.outer_iteration(optimizer))
            seconds.append(time.perf_counter() - start)
        results[name] = (min(seconds), losses[0], losses[-1])
        print(f"  ipc 1  {name:<22} {min(seconds):8.2f} s/outer iteration (first: {seconds[0]:.1f} s)   "
              f"match loss first: {losses[0]:.4f}, after {ITERATIONS_1}: {losses[-1]:.4f}", flush=True)
    return results


def time_ipc10(images, labels) -> dict[str, tuple[float, float, float]]:
    results = {}
    for name, model, optimizer in paths(10, images, labels):
        net = model.fresh_net()
        passes = model.first_order(net)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=model.lr_net)
        match_s, inner_s, losses = [], [], []
        for _ in range(STEPS_10):
            start = time.perf_counter()
            synthetic = model.synthetic_images.view(10, 10, 1, 28, 28)
            value = model.match_loss(net, model.real_batches(), synthetic, passes)
            optimizer.zero_grad(set_to_none=True)
            value.backward(inputs=[model.synthetic_images])
            optimizer.step()
            match_s.append(time.perf_counter() - start)
            losses.append(float(value.detach()) / 10)
            start = time.perf_counter()
            model.train_net_on_synthetic(passes, net_optimizer)
            inner_s.append(time.perf_counter() - start)
        per_iteration = model.outer_loop * min(match_s) + (model.outer_loop - 1) * min(inner_s)
        results[name] = (per_iteration, losses[0], losses[-1])
        print(f"  ipc 10 {name:<22} {per_iteration:8.1f} s/outer iteration (= {model.outer_loop} x {min(match_s):.2f} s matching + "
              f"{model.outer_loop - 1} x {min(inner_s):.2f} s inner; first step {match_s[0] + inner_s[0]:.1f} s)   "
              f"match loss first: {losses[0]:.4f}, after {STEPS_10} steps: {losses[-1]:.4f}", flush=True)
    return results


DD_PROBE = r"""
import json, sys, torch
from lossy_memory.models.unrolled_distiller import UnrolledDatasetDistiller
from lossy_memory.nets import LeNet5


def status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


torch.set_num_threads(1)
steps, device = int(sys.argv[1]), sys.argv[2]
model = UnrolledDatasetDistiller(LeNet5, (1, 28, 28), 10, steps=steps, epochs=1, seed=0).to(device)
x, y = torch.randn(1024, 1, 28, 28, device=device), torch.randint(0, 10, (1024,), device=device)
if device == "cuda":
    torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:  # reset the peak resident set (VmHWM) to the current one, so the peak below is this meta-step's
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = status_kib("VmRSS") * 1024
model.meta_loss(x, y).backward()
peak = torch.cuda.max_memory_allocated() if device == "cuda" else status_kib("VmHWM") * 1024
print(json.dumps({"steps": steps, "peak_bytes": peak - base}))
"""


def dd_memory() -> list[tuple[int, float]]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for steps in UNROLLED_STEPS:
        out = subprocess.run([sys.executable, "-c", DD_PROBE, str(steps), device], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20
        rows.append((steps, peak))
        print(f"  {steps:>3} unrolled steps: peak {peak:8.1f} MiB above the set-up ({device})", flush=True)
    return rows


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images, labels = mnist_train()
        print(f"gradient matching, ConvNet (reference MNIST layout, first padding 3), real MNIST, batch_real 256, 1 thread, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        for ipc, timer in ((1, time_ipc1), (10, time_ipc10)):
            results = timer(images, labels)
            base = results["(a) loop fp32"][0]
            fastest = min(results, key=lambda k: results[k][0])
            reference = results["(r) reference-style loop"][0]
            drift = {k: (100 * (v[1] / results["(a) loop fp32"][1] - 1), 100 * (v[2] / results["(a) loop fp32"][2] - 1)) for k, v in results.items()}
            print(f"  ipc {ipc}: the loop fp32 takes {base / reference:.2f}x the reference-style loop's time (bar <= 1x); "
                  f"fastest {fastest} at {base / results[fastest][0]:.2f}x the loop fp32 "
                  f"(bar >= 3x where its accuracy holds), match loss {drift[fastest][0]:+.2f}% on the first step "
                  f"(identical inputs; bar within 1%), {drift[fastest][1]:+.2f}% at the last (trajectories drift apart: "
                  f"the compiled fp32 loop {drift['(d) loop fp32 compiled'][1]:+.2f}%); speed-ups: "
                  + ", ".join(f"{k} {base / v[0]:.2f}x" for k, v in results.items()), flush=True)
        print("dataset distillation, LeNet, 10 images per step, real batch 1024: peak memory of one meta-gradient")
        rows = dd_memory()
        if len(rows) > 1:
            (s0, m0), (s1, m1) = rows[0], rows[-1]
            print(f"  growth: {(m1 - m0) / (s1 - s0):.2f} MiB per unrolled step")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
