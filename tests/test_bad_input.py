"""Bad input, as a user types it: for each case the entry point stops before any expensive work with one line that
says what is wrong and how to fix it (``error: ...``, no traceback), exit status 1, and leaves no file or folder
behind (its fresh run directory is removed; data folders are as they were). Each entry point runs in-process through
its Hydra ``main`` given a composed config (the same code path as the command line, past Hydra's own parsing)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from data_formats import write_mnist
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from lossy_memory.runtime import CONFIG_DIR, register_resolvers

register_resolvers()
FAST = ["+trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null", "logger=csv"]
SPLIT = ["+experiment=mnist_split_lifelong", "data.num_tasks=2", *FAST]


def config(name: str, overrides: list[str], root: Path):
    """``python -m lossy_memory.<name> <overrides>``'s config, its fresh run directory made as Hydra makes it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    run_dir = root / "outputs" / "runs" / "fresh"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("made by Hydra\n")
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir = str(run_dir), str(root / "outputs")
        del cfg.hydra
    return cfg


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny MNIST in the real on-disk format."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, train_per_class=20, test_per_class=5)
    return root


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory) -> dict[str, Path]:
    """A finished split-MNIST run's last.ckpt, a DiscreteVAE's, a damaged file and a foreign torch file."""
    from conftest import compose_config
    from lossy_memory.train import train

    root = tmp_path_factory.mktemp("checkpoints")
    train(compose_config([*SPLIT, "data.batch_size=20", f"paths.data_dir={data}"], root / "continual"))
    train(compose_config(["+experiment=mnist_compression", "trainer=debug", "model.latent.c=8", "test=false", *FAST[:2],
                          f"paths.data_dir={data}"], root / "vae"))
    (root / "damaged.ckpt").write_bytes((root / "continual" / "checkpoints" / "last.ckpt").read_bytes()[:2000])
    torch.save({"weights": torch.zeros(3)}, root / "foreign.ckpt")
    return {"continual": root / "continual" / "checkpoints" / "last.ckpt", "vae": root / "vae" / "checkpoints" / "last.ckpt",
            "damaged": root / "damaged.ckpt", "foreign": root / "foreign.ckpt"}


def synthetic(root: Path, shape=(1, 28, 28)) -> Path:
    from lossy_memory.memory.synthetic import SyntheticSet, default_stats

    labels = torch.arange(10)
    SyntheticSet(torch.randn(10, *shape), labels, *default_stats(shape[0])).save(root / "set.pt")
    return root / "set.pt"


# (entry point, overrides (DATA = the tiny MNIST root, CKPT:<name> = a checkpoint, ROOT = this test's folder), message)
CASES = [
    # configs
    ("train", [*SPLIT, "model.num_classes=5"], "model.num_classes=5 but the stream split MNIST has 10 classes"),
    ("train", [*SPLIT, "strategy.steps=0"], "strategy.steps (N, updates per incoming batch) must be an integer >= 1"),
    ("train", [*SPLIT, "memory.lossless_equivalent=0"], "memory.lossless_equivalent must be > 0"),
    ("train", [*SPLIT, "memory.layout=diagonal"], "memory.layout must be one of"),
    ("train", [*SPLIT, "memory.lossless_equivalent=null", "memory.budget_bits=1000"], "holds no lossless item"),
    ("train", [*SPLIT, "memory.lossless_equivalent=null"], "give memory.lossless_equivalent (effective buffer size in lossless images) or memory.budget_bits"),
    ("train", [*SPLIT, "trainer.max_epochs=2"], "a task stream is seen once: set trainer.max_epochs=1"),
    ("train", [*SPLIT, "cpu_threads=0"], "cpu_threads must be an integer >= 1"),
    ("train", [*SPLIT, "data.batch_size=0"], "must be >= 1"),
    ("train", [*SPLIT, "data.num_tasks=7"], "data.num_tasks=7 but the stream has only 5 tasks"),
    ("train", [*SPLIT, "memory.reconstruct_incoming=true"], "reconstruct_incoming passes incoming images through the generator"),
    ("train", [*SPLIT, "memory.generator_init=x.ckpt"], "memory.generator_init initialises the recollection memory's DiscreteVAE"),
    ("train", [*SPLIT, "memory=recollection", "memory.generator_init=ROOT/none.ckpt"], "none.ckpt does not exist"),
    ("train", [*SPLIT, "strategy=icarl", "data=mnist_permuted", "data.num_tasks=2", "data.samples_per_task=20"],
     "needs tasks with disjoint classes"),
    ("train", ["+experiment=mnist_compression", "data.image_shape=[3,28,28]", *FAST], "data.image_shape is [3, 28, 28]"),
    # data folders
    ("train", [*SPLIT, "paths.data_dir=ROOT/empty", "data.download=false"], "MNIST was not found in"),
    ("train", [*SPLIT, "paths.data_dir=ROOT/truncated", "data.download=false"], "MNIST files in"),
    ("train", ["+experiment=omniglot_teacher", "paths.data_dir=ROOT/empty", "data.download=false", *FAST], "loads with data=omniglot_small"),
    ("train", ["data=cifar10", "paths.data_dir=ROOT/empty", "data.download=false", *FAST], "CIFAR-10 was not found in"),
    # checkpoints and resume
    ("train", [*SPLIT, "ckpt_path=ROOT/missing.ckpt"], "missing.ckpt does not exist"),
    ("train", [*SPLIT, "ckpt_path=CKPT:damaged"], "cannot be read"),
    ("train", [*SPLIT, "ckpt_path=CKPT:foreign"], "is not a Lightning checkpoint"),
    ("train", [*SPLIT, "data.batch_size=20", "memory.lossless_equivalent=50", "ckpt_path=CKPT:continual"],
     "memory.lossless_equivalent: 10 -> 50"),
    ("train", [*SPLIT, "ckpt_path=CKPT:vae"], "its weights would not fit this model: model._target_"),
    ("evaluate", ["ckpt_path=ROOT/missing.ckpt"], "missing.ckpt does not exist"),
    ("evaluate", ["ckpt_path=CKPT:foreign"], "is not a Lightning checkpoint"),
    # distillation sources, synthetic sets, equal bits
    ("train", ["+experiment=mnist_distill", "paths.artifact_dir=ROOT/none", "logger=csv"], "the teacher checkpoint"),
    ("evaluate_synthetic", ["path=ROOT/none.pt"], "no synthetic set at"),
    ("evaluate_synthetic", [], "give exactly one of path=<synthetic_set.pt>"),
    ("evaluate_synthetic", ["path=SET:3x32x32"], "holds images of shape [3, 32, 32] but the data has"),
    ("equal_bits", [], "give synthetic=<synthetic_set.pt>"),
    ("equal_bits", ["synthetic=SET:1x28x28", "generator=ROOT/none.ckpt"], "the generator checkpoint"),
]


@pytest.mark.parametrize(("entry", "overrides", "message"), CASES, ids=[f"{i:02d}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_line_exit_1_and_leaves_nothing(entry, overrides, message, data, checkpoints, tmp_path, capsys, one_thread):
    (tmp_path / "empty").mkdir()
    write_mnist(tmp_path / "truncated", train_per_class=2, test_per_class=1)
    images = tmp_path / "truncated" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])

    def fill(arg: str) -> str:
        for name, path in checkpoints.items():
            arg = arg.replace(f"CKPT:{name}", str(path))
        for shape in ("1x28x28", "3x32x32"):
            if f"SET:{shape}" in arg:
                folder = tmp_path / shape
                folder.mkdir(exist_ok=True)
                arg = arg.replace(f"SET:{shape}", str(synthetic(folder, tuple(int(s) for s in shape.split("x")))))
        return arg.replace("ROOT", str(tmp_path))

    args = [fill(a) for a in overrides]
    if not any(a.startswith("paths.data_dir=") for a in args):
        args.append(f"paths.data_dir={data}")
    cfg = config(entry, args, tmp_path)
    before = files(tmp_path) - files(tmp_path / "outputs")
    data_before = files(data)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f"lossy_memory.{entry}").main(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1
    assert err and err[-1].startswith("error: ") and message in err[-1], err[-3:]
    assert not (tmp_path / "outputs" / "runs" / "fresh").exists()  # the fresh run directory is gone
    assert files(tmp_path) - files(tmp_path / "outputs") == before and files(data) == data_before  # nothing else written
