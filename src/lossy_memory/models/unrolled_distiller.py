"""Dataset Distillation (Wang, Zhu, Torralba, Efros 2018): learn a few synthetic images *and* the step sizes with which
gradient descent on them, from a given initialisation, trains a network well.

The synthetic set is ``steps`` groups of images (``images_per_class_per_step`` per class in each, labels fixed); one
unrolled training run replays the groups in order ``epochs`` times, one gradient step per group, each step t with its
own learned learning rate softplus(r_t) > 0 (as the reference, one rate per unrolled step: steps x epochs of them):

    theta_{t+1} = theta_t - softplus(r_t) * grad_theta CE(f(x_{t mod steps}; theta_t), y_{t mod steps})

The meta-loss is the cross-entropy of f(.; theta_T) on a real mini-batch (the datamodule's), differentiated through
all T unrolled steps to the images and the rates: the network runs through ``torch.func.functional_call`` on the
explicit parameter dicts theta_t, and the inner gradients are taken with ``create_graph=True``, so autograd produces
the Hessian-vector products; no second-order code is written by hand. Memory grows linearly with T
(benchmarks/bench_condensation.py measures it).

``init="fixed"``: one theta_0 (drawn once with ``seed``), kept in the model and the saved set;
``init="random"``: ``inits_per_iteration`` fresh theta_0 from the init distribution at every iteration (the loss is
their mean), so the set must work from any initialisation. Evaluation (test stage) replays the learned steps from
theta_0 (fixed) or from ``eval_inits`` >= 5 fresh initialisations (random; mean +- std of test accuracy).
theta_0 is drawn as the reference draws it (``weight_init="xavier"``: Xavier-normal conv / linear weights, zero
biases); ``"default"`` takes the modules' own ``reset_parameters``.
Images live in normalised space (MNIST mean 0.1307, std 0.3081); the reference's optimiser for them is Adam
(lr 0.01, betas 0.5, 0.999), halved every 40 epochs of real data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lossy_memory.memory.synthetic import Normalizer, SyntheticSet, default_stats, save_synthetic_set, summarize
from lossy_memory.nets import Classifier
from lossy_memory.writers import write_json

INITS = ("fixed", "random")
WEIGHT_INITS = ("xavier", "default")


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def initial_params(net: nn.Module, weight_init: str = "xavier") -> dict[str, torch.Tensor]:
    """A fresh draw of ``net``'s parameters: every module's ``reset_parameters``, then (``"xavier"``) Xavier-normal
    weights and zero biases for conv and linear layers, the reference's init (PyTorch's default draws the linear
    layers about half as large, and the distilled steps then start from a network that barely moves)."""
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
    with torch.no_grad():
        for module in net.modules():
            if hasattr(module, "reset_parameters") and module is not net:
                module.reset_parameters()
            if weight_init == "xavier" and isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def unroll_steps(net: nn.Module, theta0: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                 lrs: torch.Tensor, create_graph: bool = True) -> dict[str, torch.Tensor]:
    """theta_T of ``net`` after one gradient step per entry of ``lrs`` from ``theta0``: step t descends the cross-entropy
    of ``images[t % len(images)]`` (every step's images share ``labels``) with step size ``lrs[t]``. Differentiable in
    the images and step sizes with ``create_graph``; otherwise plain SGD (the evaluation of a learned set, and the
    baselines run on the same schedule: lossy_memory.dd_baselines)."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in theta0.items()}
    with torch.enable_grad():
        for t in range(len(lrs)):
            loss = F.cross_entropy(functional_call(net, params, (images[t % len(images)],)), labels)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {k: p - lrs[t] * g for (k, p), g in zip(params.items(), grads)}
            if not create_graph:
                params = {k: p.detach().requires_grad_(True) for k, p in params.items()}
    return params if create_graph else {k: p.detach() for k, p in params.items()}


class UnrolledDatasetDistiller(L.LightningModule):
    """Learns synthetic images and per-step learning rates by backpropagating through unrolled GD (module docstring)."""

    def __init__(
        self,
        net: Callable[..., Classifier],
        image_shape: Sequence[int],
        num_classes: int,
        images_per_class_per_step: int = 1,
        steps: int = 10,
        epochs: int = 3,
        init_lr: float = 0.02,
        init: str = "fixed",
        weight_init: str = "xavier",
        inits_per_iteration: int = 1,
        eval_inits: int = 5,
        lr: float = 0.01,
        betas: Sequence[float] = (0.5, 0.999),
        decay_epochs: int = 40,
        decay_factor: float = 0.5,
        grad_clip: float | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        output_subdir: str = "synthetic",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        if init not in INITS:
            raise ValueError(f"model.init must be one of {INITS}, got {init!r}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"model.weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        for name, value in (("images_per_class_per_step", images_per_class_per_step), ("steps", steps), ("epochs", epochs),
                            ("inits_per_iteration", inits_per_iteration), ("decay_epochs", decay_epochs)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"model.{name} must be an integer >= 1, got {value!r}")
        if init == "random" and eval_inits < 5:
            raise ValueError(f"random initialisation is evaluated over fresh inits (mean +- std): model.eval_inits must be >= 5, got {eval_inits}")
        if not init_lr > 0 or not lr > 0:
            raise ValueError(f"model.init_lr and model.lr must be > 0, got {init_lr} and {lr}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"model.grad_clip (max norm of the meta-gradient) must be > 0 or null, got {grad_clip}")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.image_shape, self.num_classes = tuple(int(s) for s in image_shape), int(num_classes)
        self.steps, self.epochs, self.init, self.weight_init = int(steps), int(epochs), init, weight_init
        self.inits_per_iteration, self.eval_inits = int(inits_per_iteration), int(eval_inits)
        self.lr, self.betas, self.decay_epochs, self.decay_factor = float(lr), tuple(betas), int(decay_epochs), float(decay_factor)
        self.seed, self.output_subdir = int(seed), output_subdir
        if mean is None or std is None:
            mean, std = default_stats(self.image_shape[0])
        self.normalizer = Normalizer(mean, std)
        self.net = net(image_shape=self.image_shape, num_classes=self.num_classes)  # the architecture; its weights are theta_0 draws
        self.net.requires_grad_(False)
        per_step = self.num_classes * int(images_per_class_per_step)
        generator = torch.Generator().manual_seed(self.seed)
        self.images = nn.Parameter(torch.randn(self.steps, per_step, *self.image_shape, generator=generator))
        self.register_buffer("labels", torch.arange(self.num_classes).repeat_interleave(int(images_per_class_per_step)))
        self.raw_lrs = nn.Parameter(torch.full((self.steps * self.epochs,), inverse_softplus(float(init_lr))))
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            fixed = initial_params(self.net, self.weight_init)
        self.theta0_names = list(fixed)
        for i, name in enumerate(self.theta0_names):  # the fixed theta_0 travels with the model (device, checkpoints)
            self.register_buffer(f"theta0_{i}", fixed[name])
        self.results: dict = {}

    # -- the unrolled inner training -----------------------------------------------------------------------------
    @property
    def learning_rates(self) -> torch.Tensor:
        """One positive step size per unrolled step (softplus of the raw parameters)."""
        return F.softplus(self.raw_lrs)

    def fixed_theta0(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"theta0_{i}") for i, name in enumerate(self.theta0_names)}

    def fresh_theta0(self) -> dict[str, torch.Tensor]:
        return {k: v.to(self.images.device) for k, v in initial_params(self.net, self.weight_init).items()}

    def unroll(self, theta0: dict[str, torch.Tensor], create_graph: bool = True) -> dict[str, torch.Tensor]:
        """theta_T after replaying the learned steps from ``theta0`` (differentiable in images and rates when create_graph)."""
        return unroll_steps(self.net, theta0, self.images, self.labels, self.learning_rates, create_graph)

    def meta_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over this iteration's theta_0s of the real-batch loss after the unrolled steps (x normalised)."""
        inits = [self.fixed_theta0()] if self.init == "fixed" else [self.fresh_theta0() for _ in range(self.inits_per_iteration)]
        losses = [F.cross_entropy(functional_call(self.net, self.unroll(theta0), (x,)), y) for theta0 in inits]
        return torch.stack(losses).mean()

    # -- Lightning -------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.Adam([self.images, self.raw_lrs], lr=self.lr, betas=self.betas)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.decay_epochs, gamma=self.decay_factor)
        return [optimizer], [scheduler]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = self.meta_loss(self.normalizer(batch["x"]), batch["y"])
        optimizer.zero_grad()
        self.manual_backward(loss)
        grad_norm = self.clip_meta_gradient()
        optimizer.step()
        self.log("train/meta_loss", loss.detach(), on_step=True, prog_bar=True, batch_size=len(batch["x"]))
        self.log("train/meta_grad_norm", grad_norm, on_step=True, batch_size=len(batch["x"]))
        return loss.detach()

    def clip_meta_gradient(self) -> float:
        """Scale the images' and step sizes' gradients to a joint norm of at most ``grad_clip`` (null: leave them);
        returns the norm before clipping. The meta-gradient spikes once the learned step sizes grow, and without a
        cap a long run can diverge."""
        limit = float("inf") if self.grad_clip is None else self.grad_clip
        return float(torch.nn.utils.clip_grad_norm_([self.images, self.raw_lrs], limit))

    def on_train_epoch_end(self) -> None:
        self.lr_schedulers().step()
        lrs = self.learning_rates.detach()
        self.log_dict({"train/lr_min": float(lrs.min()), "train/lr_max": float(lrs.max())})

    def synthetic_set(self) -> SyntheticSet:
        per_step = self.images.shape[1]
        extras = {"method": "unrolled_distillation", "steps": self.steps, "epochs": self.epochs, "init": self.init,
                  "images_per_step": per_step}
        if self.init == "fixed":
            extras["theta0"] = {k: v.detach().cpu() for k, v in self.fixed_theta0().items()}
        return SyntheticSet(self.images.detach().flatten(0, 1), self.labels.repeat(self.steps),
                            *self.normalizer.stats(),
                            learning_rates=self.learning_rates.detach().cpu(), extras=extras)

    @property
    def output_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) / self.output_subdir

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            save_synthetic_set(self.synthetic_set(), self.output_dir / "synthetic_set.pt", self.loggers)

    # Evaluation: replay the learned steps from theta_0 (fixed) or from eval_inits fresh initialisations (random).
    def on_test_epoch_start(self) -> None:
        if self.init == "fixed":
            inits = [self.fixed_theta0()]
        else:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed + 1)  # evaluation inits differ from any training draw of this seed
                inits = [self.fresh_theta0() for _ in range(self.eval_inits)]
        with torch.inference_mode(False), torch.enable_grad():  # Lightning tests under inference mode; replay needs autograd
            self._trained = [self.unroll({k: v.clone() for k, v in theta0.items()}, create_graph=False) for theta0 in inits]
        self._correct, self._seen = torch.zeros(len(inits)), 0

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        x = self.normalizer(batch["x"])
        with torch.no_grad():
            for i, params in enumerate(self._trained):
                self._correct[i] += float((functional_call(self.net, params, (x,)).argmax(1) == batch["y"]).sum())
        self._seen += len(x)

    def on_test_epoch_end(self) -> None:
        accuracies = (self._correct / max(self._seen, 1)).tolist()
        self.results = {**summarize(accuracies), "accuracies": accuracies, "init": self.init}
        self.log("test/accuracy", self.results["mean"])
        self.log("test/accuracy_std", self.results["std"])
        if self.trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.output_dir / "evaluation.json", self.results)
