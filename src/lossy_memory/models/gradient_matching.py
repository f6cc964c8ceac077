"""Dataset Condensation with Gradient Matching (Zhao, Mopuri, Bilen, ICLR 2021), Algorithm 1 as in the reference
implementation (github.com/VICO-UoE/DatasetCondensation, ``main.py``).

Learns ``images_per_class`` synthetic images per class whose training gradients match the real data's along the
training trajectory of many fresh networks:

    for each outer iteration (one Lightning training step): a freshly initialised network theta
        repeat outer_loop times:
            per class c: a real mini-batch of class c (256) and the class's synthetic images;
                D_c = sum over layers with >1-D weights, over output rows, of 1 - cos(grad_real, grad_syn)
            one SGD step (lr 0.1, momentum 0.5) on the synthetic images for sum_c D_c
            (except after the last:) inner_loop epochs of SGD (lr 0.01) on theta over the whole synthetic set

(outer_loop, inner_loop) default by images per class as in the reference: 1 -> (1, 1), 10 -> (10, 50), 50 -> (50, 10).

Two paths compute the same per-class gradients: ``batched=True`` stacks the classes and runs
``vmap(grad(loss))`` over them (``torch.func``), so one call does what the reference does in a Python loop over
classes; ``batched=False`` is that loop, kept for the benchmark and as the check of the batched maths. Batching
classes through one network call is exact only when the network treats examples independently: the zoo's ConvNet
uses instance norm (GroupNorm(C, C)) and no batch norm, so it is. ``autocast_dtype="bfloat16"`` runs the synthetic
side under CPU/GPU autocast and the passes differentiated once (the real side of the class loop, the network's own
updates) on a copy of the network cast to bfloat16, whose gradients come back in float32 (``FirstOrderPasses``); the
match loss stays float32. ``compile=True`` runs those first-order passes through ``torch.compile`` (fused norm, ReLU
and pooling kernels: benchmarks/bench_condensation.py); the synthetic side keeps eager autograd, since compiled graphs
do not support the double backward it needs. Compiling takes tens of seconds, once per run and batch shape.

Images are learned in normalised space (MNIST: mean 0.1307, std 0.3081 as in the reference); the datamodule's [0, 1]
batches are normalised inside the model. After training, the set is written to ``<run dir>/synthetic/`` (tensor
file + PNG grid); the test stage runs the field's evaluation protocol (lossy_memory.memory.synthetic).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lossy_memory.memory.synthetic import (
    Normalizer,
    SyntheticSet,
    check_images_per_class,
    default_stats,
    evaluate_synthetic_set,
    reference_eval_epochs,
    save_synthetic_set,
)
from lossy_memory.nets import Classifier
from lossy_memory.writers import write_json

# The reference's (outer_loop, inner_loop) for each images-per-class setting (main.py).
LOOPS_BY_IPC = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
INITS = ("real", "noise")


def default_loops(images_per_class: int) -> tuple[int, int]:
    if images_per_class not in LOOPS_BY_IPC:
        raise ValueError(f"the reference sets (outer_loop, inner_loop) only for images_per_class in {sorted(LOOPS_BY_IPC)}, got "
                         f"{images_per_class}: set model.outer_loop and model.inner_loop explicitly")
    return LOOPS_BY_IPC[images_per_class]


def match_distance(real_grads: dict[str, torch.Tensor], syn_grads: dict[str, torch.Tensor], lead: int = 0) -> torch.Tensor:
    """Sum over parameters of the per-row (1 - cosine) distances; ``lead`` leading dims are stacked classes.

    A parameter whose own shape is 1-D (biases, norm scales) is ignored, as in the reference. Conv weights
    [out, in, kh, kw] are flattened to [out, in*kh*kw], linear weights are [out, in] already.
    """
    total = None
    for name, real in real_grads.items():
        shape = real.shape[lead:]
        if len(shape) <= 1:
            continue
        r = real.reshape(*real.shape[: lead + 1], -1).float()
        s = syn_grads[name].reshape(*real.shape[: lead + 1], -1).float()
        cosine = (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + 1e-6)
        term = (1 - cosine).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("the network has no parameter with more than one dimension: gradient matching has nothing to match")
    return total



class FirstOrderPasses:
    """A network's passes that are differentiated once (the class loop's real side, the inner loop's updates).

    With ``dtype`` they run on a copy of the network cast to it, whose gradients come back in float32 in the network's
    parameter order; the network keeps its float32 weights and ``refresh`` copies them over after they change. Pure
    bfloat16 rather than autocast: on a CPU core autocast's casts around the float32 instance norm cost more than its
    convolutions save (one real-side pass of the MNIST ConvNet, compiled: 524 ms under autocast, 301 ms pure).
    ``compile`` runs the forward through ``torch.compile``.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype | None = None, compile: bool = False):
        self.params = list(net.parameters())
        self.net = net if dtype is None else copy.deepcopy(net).to(dtype)
        self.dtype = dtype
        self.forward = torch.compile(self.net, dynamic=False) if compile else self.net
        self.net_params = list(self.net.parameters())

    def refresh(self) -> None:
        """Copy the network's weights into the low-precision copy (after they change)."""
        if self.dtype is not None:
            with torch.no_grad():
                torch._foreach_copy_(self.net_params, self.params)

    def grads(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of the cross-entropy on (x, y) with respect to the network's parameters, float32."""
        x = x if self.dtype is None else x.to(self.dtype)
        loss = F.cross_entropy(self.forward(x).float(), y)
        return [g.float() for g in torch.autograd.grad(loss, self.net_params)]


class GradientMatchingCondenser(L.LightningModule):
    """Condenses the datamodule's training set into ``images_per_class`` images per class (module docstring)."""

    def __init__(
        self,
        net: Callable[..., Classifier],
        image_shape: Sequence[int],
        num_classes: int,
        images_per_class: int = 1,
        iterations: int = 1000,
        outer_loop: int | None = None,
        inner_loop: int | None = None,
        lr_images: float = 0.1,
        momentum_images: float = 0.5,
        lr_net: float = 0.01,
        batch_real: int = 256,
        batch_train: int = 256,
        init: str = "real",
        batched: bool = True,
        chunk_classes: int | None = None,
        autocast_dtype: str | None = None,
        compile: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        eval_net: Callable[..., Classifier] | None = None,
        cross_arch: dict[str, Callable[..., Classifier]] | None = None,
        eval_nets: int = 20,
        eval_epochs: int | None = None,
        eval_lr: float = 0.01,
        eval_batch_size: int = 256,
        eval_augment: bool = False,
        output_subdir: str = "synthetic",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "eval_net", "cross_arch"])
        self.automatic_optimization = False
        self.image_shape, self.num_classes = tuple(int(s) for s in image_shape), int(num_classes)
        if isinstance(images_per_class, bool) or int(images_per_class) != images_per_class or images_per_class < 1:
            raise ValueError(f"model.images_per_class must be an integer >= 1, got {images_per_class!r}")
        self.images_per_class = int(images_per_class)
        if outer_loop is None or inner_loop is None:
            default_outer, default_inner = default_loops(self.images_per_class)
            outer_loop = default_outer if outer_loop is None else outer_loop
            inner_loop = default_inner if inner_loop is None else inner_loop
        self.outer_loop, self.inner_loop = int(outer_loop), int(inner_loop)
        if self.outer_loop < 1 or self.inner_loop < 0 or iterations < 1:
            raise ValueError(f"model.iterations and model.outer_loop must be >= 1 and model.inner_loop >= 0, got "
                             f"{iterations}, {self.outer_loop}, {self.inner_loop}")
        if init not in INITS:
            raise ValueError(f"model.init must be one of {INITS}, got {init!r}")
        if autocast_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"model.autocast_dtype must be null, 'bfloat16' or 'float16', got {autocast_dtype!r}")
        if batch_real < 1 or batch_train < 1 or eval_nets < 1:
            raise ValueError(f"model.batch_real, model.batch_train and model.eval_nets must be >= 1, got {batch_real}, {batch_train}, {eval_nets}")
        self.iterations, self.init, self.batched = int(iterations), init, bool(batched)
        self.lr_images, self.momentum_images, self.lr_net = float(lr_images), float(momentum_images), float(lr_net)
        self.batch_real, self.batch_train, self.chunk_classes = int(batch_real), int(batch_train), chunk_classes
        self.autocast_dtype = None if autocast_dtype is None else getattr(torch, autocast_dtype)
        self.compile = bool(compile)
        if mean is None or std is None:
            mean, std = default_stats(self.image_shape[0])
        self.normalizer = Normalizer(mean, std)
        self.net_factory = net
        self.eval_factory = eval_net or net
        self.cross_arch = dict(cross_arch or {})  # name -> network factory, each also evaluated in the test stage
        # Fails now, clearly, if the network cannot take the data's images.
        net(image_shape=self.image_shape, num_classes=self.num_classes)
        eval_epochs = reference_eval_epochs(bool(eval_augment)) if eval_epochs is None else int(eval_epochs)
        self.eval_settings = dict(num_nets=int(eval_nets), epochs=eval_epochs, lr=float(eval_lr),
                                  batch_size=int(eval_batch_size), augment=bool(eval_augment))
        self.output_subdir, self.seed = output_subdir, int(seed)
        m = self.num_classes * self.images_per_class
        self.synthetic_images = nn.Parameter(torch.randn(m, *self.image_shape))
        self.register_buffer("synthetic_labels", torch.arange(self.num_classes).repeat_interleave(self.images_per_class))
        self.real_images: torch.Tensor | None = None  # the training images, normalised once (float): batches are plain gathers
        self.class_indices: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(self.seed)
        self.iteration = 0
        self.results: dict = {}

    # -- real data ----------------------------------------------------------------------------------------------
    def attach_real_data(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the training set (uint8 or float in [0, 1]; kept normalised, on the synthetic set's device) for per-class
        sampling, and initialise the synthetic set."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"training images have shape {list(images.shape[1:])} but model.image_shape is {list(self.image_shape)}")
        check_images_per_class(labels, self.images_per_class, self.num_classes)
        self.real_images = self.to_input(images)  # once, as the reference keeps them: no conversion per matching step
        self.class_indices = [torch.nonzero(labels.cpu() == c).flatten() for c in range(self.num_classes)]
        with torch.no_grad():
            if self.init == "real":
                chosen = torch.cat([self.draw_indices(c, self.images_per_class) for c in range(self.num_classes)])
                self.synthetic_images.copy_(self.real_images[chosen])
            else:
                self.synthetic_images.copy_(torch.randn(self.synthetic_images.shape, generator=self.generator))

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.real_images is None:
            train = self.trainer.datamodule.train_set
            self.attach_real_data(train.images, train.labels)

    def on_fit_start(self) -> None:
        self.real_images = self.real_images.to(self.device)  # Lightning moves the module after setup

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] images as the normalised float input the synthetic images live beside."""
        images = images.to(self.synthetic_images.device)
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return self.normalizer.to(x.device)(x)

    def draw_indices(self, c: int, n: int) -> torch.Tensor:
        pool = self.class_indices[c]
        return pool[torch.randperm(len(pool), generator=self.generator)[:n]]

    def real_batches(self) -> torch.Tensor:
        """One real mini-batch per class, stacked: [classes, batch, C, H, W] (as many per class as the smallest class has)."""
        n = min(self.batch_real, min(len(i) for i in self.class_indices))
        index = torch.stack([self.draw_indices(c, n) for c in range(self.num_classes)])
        return self.real_images[index.flatten().to(self.real_images.device)].view(self.num_classes, n, *self.image_shape)

    # -- the matching loss ---------------------------------------------------------------------------------------
    def autocast(self):
        device_type = self.synthetic_images.device.type
        return torch.autocast(device_type, dtype=self.autocast_dtype or torch.bfloat16, enabled=self.autocast_dtype is not None)

    def first_order(self, net: nn.Module) -> FirstOrderPasses:
        """``net``'s first-order passes: in ``autocast_dtype``, compiled with ``compile=True`` (the module docstring)."""
        return FirstOrderPasses(net, self.autocast_dtype, self.compile)

    def match_loss(self, net: nn.Module, real: torch.Tensor, synthetic: torch.Tensor,
                   passes: FirstOrderPasses | None = None) -> torch.Tensor:
        """sum_c D(grad of class c's real loss, grad of class c's synthetic loss), differentiable in ``synthetic``.

        ``real``: [classes, batch, C, H, W]; ``synthetic``: [classes, ipc, C, H, W] (class c's rows are class c).
        ``passes``: the real side of the class loop (``first_order(net)``; default: ``net`` itself, float32, eager).
        """
        if self.batched:
            return self._match_loss_batched(net, real, synthetic)
        return self._match_loss_loop(net, real, synthetic, FirstOrderPasses(net) if passes is None else passes)

    def _match_loss_loop(self, net: nn.Module, real: torch.Tensor, synthetic: torch.Tensor, passes: FirstOrderPasses) -> torch.Tensor:
        """The reference's loop over classes (torch.autograd.grad with create_graph for the synthetic side)."""
        params = [p for p in net.parameters()]
        names = [n for n, _ in net.named_parameters()]
        loss = 0.0
        for c in range(len(real)):
            g_real = passes.grads(real[c], torch.full((len(real[c]),), c, device=real.device))
            with self.autocast():
                loss_syn = F.cross_entropy(net(synthetic[c]), torch.full((len(synthetic[c]),), c, device=real.device))
            g_syn = torch.autograd.grad(loss_syn, params, create_graph=True)
            loss = loss + match_distance(dict(zip(names, g_real)), dict(zip(names, g_syn)))
        return loss

    def _match_loss_batched(self, net: nn.Module, real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
        """vmap over classes of the per-class gradient: one batched network pass per side instead of a class loop."""
        params = {name: p.detach() for name, p in net.named_parameters()}
        buffers = dict(net.named_buffers())

        def class_loss(p, x, y):
            with self.autocast():
                logits = functional_call(net, (p, buffers), (x,))
            return F.cross_entropy(logits.float(), y)

        per_class_grad = vmap(grad(class_loss), in_dims=(None, 0, 0), chunk_size=self.chunk_classes)
        classes = torch.arange(len(real), device=real.device)
        y_real = classes.view(-1, 1).expand(-1, real.shape[1])
        y_syn = classes.view(-1, 1).expand(-1, synthetic.shape[1])
        with torch.no_grad():
            g_real = per_class_grad(params, real, y_real)
        g_syn = per_class_grad(params, synthetic, y_syn)
        return match_distance(g_real, g_syn, lead=1)

    # -- one outer iteration ---------------------------------------------------------------------------------------
    def fresh_net(self) -> nn.Module:
        net = self.net_factory(image_shape=self.image_shape, num_classes=self.num_classes).to(self.synthetic_images.device)
        return net.train()

    def outer_iteration(self, image_optimizer: torch.optim.Optimizer, backward: Callable[[torch.Tensor], None] | None = None) -> float:
        """Algorithm 1's body for one fresh network; returns the mean match loss per class and outer step."""
        # Only the images need the match loss's gradient: the network's weights are fresh or trained by the inner loop.
        backward = backward or (lambda loss: loss.backward(inputs=[self.synthetic_images]))
        net = self.fresh_net()
        passes = self.first_order(net)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        total = 0.0
        for step in range(self.outer_loop):
            synthetic = self.synthetic_images.view(self.num_classes, self.images_per_class, *self.image_shape)
            loss = self.match_loss(net, self.real_batches(), synthetic, passes)
            image_optimizer.zero_grad(set_to_none=True)
            backward(loss)
            image_optimizer.step()
            total += float(loss.detach())
            if step == self.outer_loop - 1:
                break
            self.train_net_on_synthetic(passes, net_optimizer)
        return total / (self.num_classes * self.outer_loop)

    def train_net_on_synthetic(self, passes: FirstOrderPasses, optimizer: torch.optim.Optimizer) -> None:
        """``inner_loop`` epochs of SGD on the network of ``passes`` (its ``first_order``) over the whole (detached)
        synthetic set, batches of batch_train."""
        images, labels = self.synthetic_images.detach().clone(), self.synthetic_labels
        for _ in range(self.inner_loop):
            order = torch.randperm(len(images), generator=self.generator).to(images.device)
            for start in range(0, len(images), self.batch_train):
                index = order[start : start + self.batch_train]
                for param, g in zip(passes.params, passes.grads(images[index], labels[index])):
                    param.grad = g
                optimizer.step()
                passes.refresh()

    # -- Lightning -------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return torch.optim.SGD([self.synthetic_images], lr=self.lr_images, momentum=self.momentum_images)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One outer iteration; the datamodule's batches only pace the steps (real batches are drawn per class)."""
        if self.iteration >= self.iterations:
            self.trainer.should_stop = True
            return None
        loss = self.outer_iteration(self.optimizers(), lambda loss: self.manual_backward(loss, inputs=[self.synthetic_images]))
        self.iteration += 1
        self.log("train/match_loss", loss, on_step=True, prog_bar=True, batch_size=1)
        self.log("train/iteration", float(self.iteration), on_step=True, batch_size=1)
        if self.iteration >= self.iterations:
            self.trainer.should_stop = True
        return None

    def synthetic_set(self) -> SyntheticSet:
        return SyntheticSet(self.synthetic_images.detach(), self.synthetic_labels, *self.normalizer.stats(),
                            extras={"method": "gradient_matching", "images_per_class": self.images_per_class,
                                    "iterations": self.iteration, "outer_loop": self.outer_loop, "inner_loop": self.inner_loop,
                                    "init": self.init})

    @property
    def output_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) / self.output_subdir

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            save_synthetic_set(self.synthetic_set(), self.output_dir / "synthetic_set.pt", self.loggers)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["condensation_iteration"] = self.iteration

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.iteration = int(checkpoint.get("condensation_iteration", 0))

    # Evaluation: the field's protocol, on the datamodule's test split.
    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._test_x.append(batch["x"].detach().cpu())
        self._test_y.append(batch["y"].detach().cpu())

    def on_test_epoch_start(self) -> None:
        self._test_x, self._test_y = [], []

    def on_test_epoch_end(self) -> None:
        # Lightning evaluates under inference mode; the protocol trains networks, so it needs autograd back.
        with torch.inference_mode(False), torch.enable_grad():
            self._evaluate()

    def _evaluate(self) -> None:
        test_images = self.normalizer.cpu()(torch.cat(self._test_x).clone())
        self.normalizer.to(self.device)
        synthetic = self.synthetic_set()
        evaluators = {"": self.eval_factory, **{f"_{name}": factory for name, factory in self.cross_arch.items()}}
        self.results = {}
        for suffix, factory in evaluators.items():
            result = evaluate_synthetic_set(synthetic.images.to(self.device), synthetic.labels.to(self.device), test_images,
                                            torch.cat(self._test_y).clone(), factory, self.num_classes, seed=self.seed,
                                            device=self.device, log=print, **self.eval_settings)
            self.results[suffix.lstrip("_") or "eval_net"] = result
            self.log(f"test/accuracy{suffix}", result["mean"])
            self.log(f"test/accuracy_std{suffix}", result["std"])
        if self.trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.output_dir / "evaluation.json", {**self.results, **self.eval_settings})


def condense(images: torch.Tensor, labels: torch.Tensor, net: Callable[..., Classifier], images_per_class: int,
             iterations: int, device: torch.device | str = "cpu", **settings) -> SyntheticSet:
    """Gradient matching in a plain loop, outside Lightning: ``iterations`` outer iterations on (images, labels),
    on ``device`` (the real images stay where they are; batches move as they are drawn).

    ``labels`` may be any classes (e.g. one task's two digits): they are condensed as 0..k-1 and the returned set
    carries the original labels. ``settings`` are GradientMatchingCondenser's (outer_loop, lr_images, mean, std, ...).
    Used by the continual strategy that keeps condensed memories (lossy_memory.strategies.CondensedReplay).
    """
    classes = torch.unique(labels.cpu(), sorted=True)
    local = torch.searchsorted(classes, labels.cpu())
    condenser = GradientMatchingCondenser(net, tuple(images.shape[1:]), len(classes), images_per_class=images_per_class,
                                          iterations=iterations, **settings).to(device)
    condenser.attach_real_data(images, local)
    optimizer = condenser.configure_optimizers()
    for _ in range(iterations):
        condenser.outer_iteration(optimizer)
        condenser.iteration += 1
    synthetic = condenser.synthetic_set()
    synthetic.labels = classes[synthetic.labels]
    return synthetic
