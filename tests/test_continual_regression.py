"""Same science across rebuilds: the accuracy matrices of a short real split-MNIST stream, for fixed seeds, under
lossless replay, recollection replay, GEM, A-GEM, DER++ and iCaRL, must stay what they were when recorded.

The expected matrices (``regression/continual_matrices.json``) were recorded with the code as it stood before the
continual core was rebuilt (commit 5acddda). A change that moves a result must either be a bug or come with a new
recording and a note saying why the numbers moved (for instance, a random draw taken in another order).
Re-record: ``python tests/test_continual_regression.py [name ...]`` (writes the JSON).

Moved on purpose since 5acddda: ``derpp``, once, when the memory began to pay for DER++'s stored logits (10 float32
per item) from its bit budget: 19 items instead of 20 at this budget. With the logits left outside the budget the
rebuilt code gives the 5acddda matrix exactly (checked by patching ``attribute_bits`` to 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_config

EXPECTED = Path(__file__).parent / "regression" / "continual_matrices.json"
COMMON = ["+experiment=mnist_split_lifelong", "data.num_tasks=3", "data.batch_size=100", "model.eval_max_examples=200",
          "memory.lossless_equivalent=20", "seed=12345", "+trainer.enable_progress_bar=false",
          "callbacks.rich_progress_bar=null", "logger=csv"]
RUNS = {
    "lossless_replay": ["strategy=replay", "memory=lossless"],
    # the recorded settings (c=38, no transfer, the classifier on incoming images as they are), whatever the defaults
    "recollection_replay": ["strategy=replay", "memory=recollection", "memory.generator.hidden=8", "memory.generator.latent.c=38",
                            "memory.generator.latent.l=2", "memory.generator_init=null", "memory.reconstruct_incoming=false",
                            "memory.generator_replay_size=20", "strategy.replay_size=20"],
    "gem": ["strategy=gem", "memory=lossless", "memory.layout=per_task"],
    "agem": ["strategy=agem", "memory=lossless", "strategy.sample_size=20"],
    "derpp": ["strategy=derpp", "memory=lossless"],
    "icarl": ["strategy=icarl", "memory=lossless"],
}


def outcome(name: str, data_dir: Path, output_dir: Path) -> dict[str, list]:
    """The run's accuracy matrix R and, with a generator, its distortion curve (what the generator path changes)."""
    from lossy_memory.train import train

    cfg = compose_config([*COMMON, *RUNS[name], f"paths.data_dir={data_dir}"], output_dir)
    train(cfg)
    record = json.loads((output_dir / "continual.json").read_text())
    return {"accuracy_matrix": record["accuracy_matrix"],
            "generator_distortion": record.get("generator_distortion", {}).get("distortion", [])}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_accuracy_matrix_is_unchanged(name, real_data_dir, tmp_path, one_thread):
    expected = json.loads(EXPECTED.read_text())[name]
    got = outcome(name, real_data_dir, tmp_path / "run")
    assert torch.allclose(torch.tensor(got["accuracy_matrix"]), torch.tensor(expected["accuracy_matrix"]), rtol=0, atol=1e-9), name
    assert got["generator_distortion"] == pytest.approx(expected["generator_distortion"], rel=1e-5), name


if __name__ == "__main__":  # record
    import os
    import tempfile

    from lossy_memory.runtime import register_resolvers

    register_resolvers()
    torch.set_num_threads(1)
    data = Path(os.environ.get("LOSSY_MEMORY_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    record = {}
    for run_name in sorted(RUNS) if len(sys.argv) < 2 else sys.argv[1:]:
        with tempfile.TemporaryDirectory() as folder:
            record[run_name] = outcome(run_name, data, Path(folder) / "run")
            print(run_name, record[run_name], flush=True)
    EXPECTED.parent.mkdir(exist_ok=True)
    old = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    EXPECTED.write_text(json.dumps({**old, **record}) + "\n")
