"""Lightning's rich progress bar, without the "Epoch 0/-2" it shows for runs with no epoch limit (``max_epochs=-1``:
a distillation stops at its episode count)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            description = description.replace(f"/{self.trainer.max_epochs - 1}", "").rstrip()
        return description
