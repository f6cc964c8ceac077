"""The DiscreteVAE: experiences compressed to c categorical variables of l values (the paper's generator)."""

from __future__ import annotations

from lossy_memory.metrics import CodeUsagePerplexity
from lossy_memory.models.autoencoder import LatentAutoencoder
from lossy_memory.nets.latents import CategoricalLatent


class DiscreteVAE(LatentAutoencoder):
    """LatentAutoencoder with a CategoricalLatent bottleneck (Gumbel-softmax, hard forward, soft backward).

    ``encode(x)`` gives LongTensor [N, c] codes, c * ceil(log2 l) bits each. Filters per layer default to
    c*l/4 as in the paper's appendix. Code-usage perplexity is logged per split so collapse is visible.
    The KL weight defaults to 0.01: at 1.0 the posterior collapses to the uniform prior on MNIST (README).
    """

    def __init__(self, latent: CategoricalLatent, *args, kl_weight: float = 0.01, **kwargs):
        if not isinstance(latent, CategoricalLatent):
            raise TypeError(f"DiscreteVAE needs a CategoricalLatent, got {type(latent).__name__}")
        super().__init__(latent, *args, kl_weight=kl_weight, **kwargs)
        self.code_usage = CodeUsagePerplexity(latent.c, latent.l)

    def default_hidden(self) -> int:
        return max(1, self.latent.c * self.latent.l // 4)

    def evaluation_step(self, batch: dict, split: str) -> None:
        super().evaluation_step(batch, split)
        if split == "val":
            self.code_usage.update(self.encode(batch["x"]))
            self.log("val/code_perplexity", self.code_usage, on_epoch=True, batch_size=len(batch["x"]))
