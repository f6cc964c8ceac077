"""``python -m lossy_memory.report``: runs collected one way (results.json), recognised by kind, seeds pooled, tables
in the papers' shapes; what a sweep varied beyond the table's columns kept apart; bad folders named."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lossy_memory.memory import jpeg
from lossy_memory.report.__main__ import main
from lossy_memory.report.runs import collect, varied_settings

MNIST_INPUT_BITS = 784 * 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_run(folder: Path, config: dict, metrics: dict | None, files: dict | None = None, storage: dict | None = None) -> Path:
    """A run folder as `lossy_memory.train` leaves it: config.yaml, run.json, results.json (None: unfinished) and the
    kind's own results files."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"paths": {"output_dir": str(folder)}, **config}))
    (folder / "run.json").write_text(json.dumps({"git": {"sha": "x", "dirty": False}, **({"storage": storage} if storage else {})}))
    if metrics is not None:
        (folder / "results.json").write_text(json.dumps({"metrics": metrics}))
    for name, record in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(record))
    return folder


def compression_run(folder: Path, latent: dict, bits: float, train: float, test: float, seed: int = 0, lr: float = 0.001,
                    finished: bool = True) -> Path:
    config = {"seed": seed, "model": {"_target_": "lossy_memory.models.DiscreteVAE", "latent": latent, "optimizer": {"lr": lr}},
              "trainer": {"default_root_dir": str(folder)}}
    storage = {"bits_per_item": bits, "compression_ratio": MNIST_INPUT_BITS / bits}
    return fake_run(folder, config, {"train/distortion": train, "test/distortion": test} if finished else None, storage=storage)


def categorical(c: int, l: int) -> dict:
    return {"_target_": "lossy_memory.nets.CategoricalLatent", "c": c, "l": l, "tau": 1.0}


def gaussian(h: int) -> dict:
    return {"_target_": "lossy_memory.nets.GaussianLatent", "h": h}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


# -- compression -------------------------------------------------------------------------------------------
def test_compression_runs_pool_seeds_into_csv_png_and_markdown(tmp_path, capsys):
    sweep, other = tmp_path / "categorical", tmp_path / "continuous"
    compression_run(sweep / "0", categorical(38, 2), 38, train=0.08, test=0.085, seed=0)
    compression_run(sweep / "1", categorical(38, 2), 38, train=0.10, test=0.095, seed=1)
    compression_run(sweep / "2", categorical(168, 2), 168, train=0.03, test=0.031)
    compression_run(other / "0", gaussian(2), 64, train=0.12, test=0.121)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file beside the job folders
    out = tmp_path / "report"
    assert main([str(sweep), str(other), "--out", str(out)]) == 0
    rows = read_rows(out / "compression.csv")
    assert [(r["kind"], r["c"], r["l"], r["h"], r["seeds"]) for r in rows] == [
        ("categorical", "168", "2", "", "1"), ("categorical", "38", "2", "", "2"), ("continuous", "", "", "2", "1")]
    pooled = rows[1]
    assert float(pooled["distortion"]) == pytest.approx(0.09) and float(pooled["distortion_std"]) == pytest.approx(0.02 / 2 ** 0.5)
    assert float(pooled["compression_ratio"]) == pytest.approx(MNIST_INPUT_BITS / 38) and rows[0]["distortion_std"] == ""
    assert (out / "compression.png").read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(out / "compression.png") as image:
        image.verify()
    printed = capsys.readouterr().out
    assert printed.startswith("## compression (4 runs)")
    assert "| categorical | 38 | 2 |  |  | 38.0 | 165.1 | 0.001 | 2 | 0.0900 ± 0.0141 | 0.0900 ± 0.0071 |" in printed
    assert (out / "report.md").read_text() in printed


def test_compression_rows_stand_beside_the_papers_and_say_where_categorical_beats_continuous(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    compression_run(sweep / "0", categorical(38, 2), 38, train=0.07, test=0.07)  # 165x
    compression_run(sweep / "1", categorical(168, 2), 168, train=0.03, test=0.03)  # 37.3x
    compression_run(sweep / "2", gaussian(4), 128, train=0.09, test=0.09)  # 49x: c=38 (0.07) beats it
    compression_run(sweep / "3", gaussian(80), 2560, train=0.02, test=0.02)  # 2.45x: c=168 (0.03) does not
    assert main([str(sweep)]) == 0
    rows = {(r["c"], r["h"]): r for r in read_rows(sweep / "compression.csv")}
    assert float(rows["38", ""]["paper"]) == pytest.approx(0.05785) and float(rows["168", ""]["paper"]) == pytest.approx(0.01955)
    assert float(rows["", "4"]["paper"]) == pytest.approx(0.135196) and float(rows["", "80"]["paper"]) == pytest.approx(0.0149272)
    assert float(rows["", "4"]["categorical_best"]) == pytest.approx(0.07)  # only c=38 compresses at least 49x
    assert float(rows["", "80"]["categorical_best"]) == pytest.approx(0.03)
    assert float(rows["", "4"]["paper_categorical_best"]) == pytest.approx(0.03996)  # the paper's c=12, l=37 at 87.1x
    assert rows["38", ""]["categorical_best"] == ""
    printed = capsys.readouterr().out
    assert "beats continuous at 1 of 2 continuous points (paper: 2 of 2); not at h=80 (2.5x: 0.0300 vs 0.0200)." in printed


def test_what_a_sweep_varied_beyond_the_columns_is_kept_apart_not_pooled(tmp_path, capsys):
    for k, epochs in enumerate((2, 10)):  # an epochs sweep, one seed: two settings, not two seeds of one
        folder = compression_run(tmp_path / "sweep" / str(k), categorical(38, 2), 38, train=0.08 + k / 100, test=0.09)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, "trainer": {**config["trainer"], "max_epochs": epochs}}))
    assert main([str(tmp_path / "sweep")]) == 0
    rows = read_rows(tmp_path / "sweep" / "compression.csv")
    assert sorted(r["settings"] for r in rows) == ["trainer.max_epochs=10", "trainer.max_epochs=2"]
    assert all(r["seeds"] == "1" for r in rows)
    assert "trainer.default_root_dir" not in capsys.readouterr().out  # where a run ran is not a setting


def test_the_learning_rate_is_a_column_so_a_rate_per_latent_is_no_setting(tmp_path, capsys):
    compression_run(tmp_path / "sweep" / "0", categorical(38, 2), 38, train=0.06, test=0.06, lr=0.001)  # lr_by_latent's rates
    compression_run(tmp_path / "sweep" / "1", categorical(168, 2), 168, train=0.03, test=0.03, lr=0.0003)
    compression_run(tmp_path / "sweep" / "2", categorical(168, 2), 168, train=0.04, test=0.04, lr=0.001)  # a rate sweep at c=168
    assert main([str(tmp_path / "sweep")]) == 0
    rows = read_rows(tmp_path / "sweep" / "compression.csv")
    assert [(r["c"], r["lr"], r["settings"], r["seeds"]) for r in rows] == [("168", "0.0003", "", "1"), ("168", "0.001", "", "1"),
                                                                            ("38", "0.001", "", "1")]
    assert "| lr |" in capsys.readouterr().out


def test_varied_settings_skip_seeds_folders_and_interpolated_copies(tmp_path):
    runs = []
    for k in range(2):
        config = {"seed": k, "data": {"seed": k}, "memory": {"lr": k}, "model": {"memory": {"lr": k}, "output_dir": f"/x/{k}"},
                  "strategy": {"steps": 1}}
        runs.append(fake_run(tmp_path / str(k), config, {}))
    assert varied_settings(collect([tmp_path]), described=()) == ["memory.lr"]
    assert varied_settings(collect([tmp_path]), described=("memory",)) == []


def test_jpeg_joins_the_compression_table(tmp_path, real_data_dir):
    sweep = tmp_path / "sweep"
    compression_run(sweep / "0", categorical(38, 2), 38, train=0.08, test=0.085)
    assert main([str(sweep), "--jpeg", "--jpeg-items", "16", "--data-dir", str(real_data_dir)]) == 0
    rows = read_rows(sweep / "compression.csv")
    assert [r["kind"] for r in rows] == ["categorical"] + ["jpeg"] * len(jpeg.QUALITIES)
    assert sorted(int(r["quality"]) for r in rows if r["kind"] == "jpeg") == list(jpeg.QUALITIES)
    assert all(r["test_distortion"] == "" and r["c"] == "" for r in rows if r["kind"] == "jpeg")


# -- bad input -----------------------------------------------------------------------------------------------
def report_error(args: list[str], capsys) -> str:
    assert main(args) == 1
    return capsys.readouterr().err


def test_errors_name_the_folder_and_what_is_missing(tmp_path, capsys):
    assert "no such folder" in report_error([str(tmp_path / "absent")], capsys)
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty'}: no runs in it" in report_error([str(tmp_path / "empty")], capsys)
    sweep = tmp_path / "sweep"
    compression_run(sweep / "0", categorical(38, 2), 38, train=0.08, test=0.085)
    unfinished = compression_run(sweep / "1", categorical(19, 4), 38, train=0, test=0, finished=False)
    message = report_error([str(sweep)], capsys)
    assert "runs without results.json" in message and str(unfinished) in message and "--skip-unfinished" in message
    assert not (sweep / "compression.csv").exists() and not (sweep / "report.md").exists()
    assert main([str(sweep), "--skip-unfinished"]) == 0
    assert [(r["c"], r["l"]) for r in read_rows(sweep / "compression.csv")] == [("38", "2")]
    assert f"skipped {unfinished}" in capsys.readouterr().err


def test_unknown_latents_twin_seeds_and_bad_arguments_are_refused(tmp_path, capsys):
    compression_run(tmp_path / "vq" / "0", {"_target_": "somewhere.VectorQuantizer", "k": 512}, 9, train=0.1, test=0.1)
    assert "model.latent._target_='somewhere.VectorQuantizer'" in report_error([str(tmp_path / "vq")], capsys)
    compression_run(tmp_path / "twice" / "a", categorical(38, 2), 38, train=0.1, test=0.1)
    compression_run(tmp_path / "twice" / "b", categorical(38, 2), 38, train=0.2, test=0.2)
    assert "with the same seed 0" in report_error([str(tmp_path / "twice")], capsys)
    missing = compression_run(tmp_path / "nometric" / "0", categorical(38, 2), 38, train=0.1, test=0.1)
    (missing / "results.json").write_text(json.dumps({"metrics": {"test/distortion": 0.1}}))
    assert "no train/distortion in results.json" in report_error([str(tmp_path / "nometric")], capsys)
    for args in ([], ["--jpeg"], ["--jpeg", "--out", str(tmp_path), "--jpeg-items", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2


def test_runs_of_models_without_a_table_are_named_and_skipped(tmp_path, capsys):
    fake_run(tmp_path / "r" / "0", {"model": {"_target_": "lossy_memory.models.Reasoner"}}, {"test/accuracy": 0.9})
    assert "no table for it" in report_error([str(tmp_path / "r")], capsys)
    compression_run(tmp_path / "r" / "1", categorical(38, 2), 38, train=0.08, test=0.085)
    assert main([str(tmp_path / "r")]) == 0
    assert "skipped 1 run(s) of Reasoner" in capsys.readouterr().err


# -- continual, distillation, condensation ---------------------------------------------------------------
def continual_run(folder: Path, seed: int, kind: str, budget: int, accuracy: float, tasks_trained: int = 5, steps: int = 1,
                  stream: str = "SplitMNISTStream") -> Path:
    memory = {"kind": kind, "lossless_equivalent": budget, "budget_bits": None, "count_generator": False,
              "anchor_weight": 0.0 if kind == "lossless" else 1.0,  # each kind's own default: not a setting the runs vary
              "generator": None if kind == "lossless" else {"latent": {"c": 38, "l": 2}}}
    config = {"seed": seed, "data": {"_target_": f"lossy_memory.data.{stream}", "seed": seed},
              "model": {"_target_": "lossy_memory.models.ContinualLearner"},
              "strategy": {"_target_": "lossy_memory.strategies.ExperienceReplay", "steps": steps}, "memory": memory}
    metrics = {"tasks_trained": tasks_trained, "num_tasks": 5, "final_average_accuracy": accuracy,
               "task_aware_final_average_accuracy": accuracy + 0.1, "forgetting": None, "storage_memory_items": 10 if kind == "lossless" else 1164}
    return fake_run(folder, config, {"cl/finished": float(tasks_trained == 5)}, {"continual.json": {"metrics": metrics}})


def test_continual_runs_pool_seeds_and_leave_out_streams_cut_short(tmp_path, capsys):
    for i, (seed, kind, accuracy) in enumerate([(0, "lossless", 0.2), (1, "lossless", 0.4), (0, "recollection", 0.5)]):
        continual_run(tmp_path / "sweep" / str(i), seed, kind, 10, accuracy)
    cut = continual_run(tmp_path / "sweep" / "3", 2, "lossless", 10, 0.9, tasks_trained=2)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    printed, errors = capsys.readouterr()
    assert "| SplitMNISTStream | ExperienceReplay | 1 | lossless | 10 | incremental | 2 | 0.300 ± 0.141 | 0.400 ± 0.141 |  | 10 |" in printed
    assert "| 1 | recollection c=38 | 10 | incremental | 1 | 0.500 | 0.600 |" in printed
    assert f"skipped {cut}: its stream stopped after 2 of 5 tasks" in errors
    rows = read_rows(tmp_path / "out" / "continual.csv")
    assert float(rows[0]["final_average_accuracy"]) == pytest.approx(0.3) and rows[0]["seeds"] == "2"
    assert (tmp_path / "out" / "continual.png").read_bytes().startswith(PNG_SIGNATURE)


def test_continual_rows_split_by_replay_steps_and_carry_the_papers_figure(tmp_path, capsys):
    """The paper's incremental-Omniglot figures stand beside the rows of the same memory, budget and N; other rows
    (budget 200: the paper has none) leave the column empty; N = 1 and N = 3 are separate rows."""
    for i, (steps, kind, budget) in enumerate([(1, "recollection", 50), (3, "recollection", 50), (3, "lossless", 50), (1, "lossless", 200)]):
        continual_run(tmp_path / str(i), 0, kind, budget, 0.3, steps=steps, stream="OmniglotStream")
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = {(r["N"], r["memory"], r["budget"]): r["paper"] for r in read_rows(tmp_path / "out" / "continual.csv")}
    assert rows == {("1", "recollection c=38", "50"): "9.3%", ("3", "recollection c=38", "50"): "13.0%",
                    ("3", "lossless", "50"): "4.8%", ("1", "lossless", "200"): ""}
    header = capsys.readouterr().out.split("\n")[2]
    assert "| paper |" in header and "settings" not in header


def distillation_run(folder, seed, source, sampling, accuracy, sampling_source="buffer", targets="teacher", fraction=None) -> Path:
    record = {"source": source, "sampling": sampling, "sampling_source": sampling_source, "targets": targets, "lossless_fraction": fraction,
              "episodes": 1000, "generator_bits_per_item": 168 if source == "recollections" else None, "accuracy_at": accuracy,
              "storage/total_bits": 123}
    config = {"seed": seed, "model": {"_target_": "lossy_memory.models.GenerativeDistiller", "student": {"_target_": "lossy_memory.nets.LeNet5"},
                                      "source": source, "targets": targets}, "distill_source": {"source": source, "sampling_source": sampling_source}}
    return fake_run(folder, config, {"test/accuracy": 0.5}, {"distillation.json": record})


def test_distillation_runs_pool_seeds_per_method_and_episode_count(tmp_path, capsys):
    distillation_run(tmp_path / "0", 0, "recollections", "RandomSampling", {"10": 0.1, "1000": 0.90})
    distillation_run(tmp_path / "1", 1, "recollections", "RandomSampling", {"10": 0.2, "1000": 0.94})
    distillation_run(tmp_path / "2", 0, "recollections", "RandomSampling", {"10": 0.1, "1000": 0.30}, sampling_source="codes")
    distillation_run(tmp_path / "3", 0, "lossless", "RandomSampling", {"10": 0.1, "1000": 0.80}, fraction=0.02)
    distillation_run(tmp_path / "4", 0, "real", "RandomSampling", {"10": 0.1, "1000": 0.95}, targets="labels")
    assert main([str(tmp_path)]) == 0
    rows = {r["method"]: r for r in read_rows(tmp_path / "distillation.csv")}
    assert set(rows) == {"buffer sampling, c=168", "code sampling, c=168", "lossless 2% (random)", "real data, true labels"}
    buffer = rows["buffer sampling, c=168"]
    assert buffer["seeds"] == "2" and float(buffer["1000"]) == pytest.approx(92.0) and float(buffer["1000_std"]) == pytest.approx(2.828, abs=1e-3)
    assert "| buffer sampling, c=168 | 2 | 123 | 15.00 ± 7.07 [10.65] | - [19.34] | 92.00 ± 2.83 [90.66] |" in capsys.readouterr().out
    assert (tmp_path / "distillation.png").stat().st_size > 0


def test_distillation_rows_carry_the_papers_figures_at_its_episode_counts(tmp_path, capsys):
    distillation_run(tmp_path / "0", 0, "recollections", "RandomSampling", {"10": 0.1, "10000": 0.95})
    distillation_run(tmp_path / "2", 1, "recollections", "RandomSampling", {"10": 0.1, "10000": 0.97, "100000": 0.99})
    for run, episodes in (("0", 10000), ("2", 100000)):  # a longer run of the same method pools with it, per episode count
        config = yaml.safe_load((tmp_path / run / "config.yaml").read_text())
        config["model"]["max_episodes"] = episodes
        (tmp_path / run / "config.yaml").write_text(yaml.safe_dump(config))
    distillation_run(tmp_path / "1", 0, "recollections", "RandomSampling", {"10": 0.1, "10000": 0.40}, sampling_source="codes")
    assert main([str(tmp_path)]) == 0
    rows = {r["method"]: r for r in read_rows(tmp_path / "distillation.csv")}
    buffer, code = rows["buffer sampling, c=168"], rows["code sampling, c=168"]
    assert float(buffer["10000_paper"]) == pytest.approx(96.77) and float(buffer["100000_paper"]) == pytest.approx(98.59)
    assert buffer["seeds"] == "2" and float(buffer["10000"]) == pytest.approx(96.0) and float(buffer["100000"]) == pytest.approx(99.0)
    assert code["10000_paper"] == ""  # the paper has no code-sampling row
    printed = capsys.readouterr().out
    assert "| buffer sampling, c=168 | 2 | 123 | 10.00 ± 0.00 [10.65] | - [19.34] | - [90.66] | 96.00 ± 1.41 [96.77] | 99.00 [98.59] |" in printed
    assert "| code sampling, c=168 | 1 | 123 | 10.00 | - | - | 40.00 | - |" in printed


def condensation_run(folder, seed, accuracies, cross=None, images_per_class=1) -> Path:
    config = {"seed": seed, "data": {"_target_": "lossy_memory.data.MNISTDataModule"}, "eval_classifier": {"_target_": "lossy_memory.nets.ConvNet"},
              "model": {"_target_": "lossy_memory.models.GradientMatchingCondenser", "images_per_class": images_per_class, "init": "real"}}
    evaluation = {"eval_net": {"accuracies": accuracies}, **({"mlp": {"accuracies": cross}} if cross else {}), "eval_epochs": 300}
    return fake_run(folder, config, {"test/accuracy": 0.9}, {"synthetic/evaluation.json": evaluation})


def test_condensation_pools_every_evaluated_network_of_every_seed(tmp_path, capsys):
    condensation_run(tmp_path / "0", 0, [0.90, 0.92], cross=[0.70, 0.72])
    condensation_run(tmp_path / "1", 1, [0.94, 0.96])
    condensation_run(tmp_path / "2", 0, [0.97], images_per_class=10)
    assert main([str(tmp_path)]) == 0
    rows = [(r["images_per_class"], r["evaluated_on"], r["seeds"], r["networks"], round(float(r["accuracy"]), 6))
            for r in read_rows(tmp_path / "condensation.csv")]
    assert rows == [("1", "ConvNet", "2", "4", 93.0), ("1", "mlp", "2", "2", 71.0), ("10", "ConvNet", "1", "1", 97.0)]
    assert "| gradient matching (real init) | MNISTDataModule | 1 | ConvNet | 2 | 4 | 93.00 ± 2.58 |" in capsys.readouterr().out


# -- real runs -----------------------------------------------------------------------------------------------
def test_a_three_seed_multirun_of_real_runs_is_one_row(real_data_dir, tmp_path):
    """`-m seed=1,2,3` of a short compression run, then the report command, both as a user types them."""
    env = {"LOSSY_MEMORY_DATA_DIR": str(real_data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    train = [sys.executable, "-m", "lossy_memory.train", "-m", "+experiment=mnist_compression", "trainer=debug", "model.latent.c=8",
             "seed=1,2,3", "callbacks.rich_progress_bar=null", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path / 'outputs'}"]
    result = subprocess.run(train, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run([sys.executable, "-m", "lossy_memory.report", str(sweep)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    distortions = [json.loads((sweep / str(k) / "results.json").read_text())["metrics"]["train/distortion"] for k in range(3)]
    assert len(set(distortions)) == 3  # three seeds, three results
    (row,) = read_rows(sweep / "compression.csv")
    assert (row["c"], row["seeds"], row["settings"]) == ("8", "3", "")
    mean = sum(distortions) / 3
    std = (sum((d - mean) ** 2 for d in distortions) / 2) ** 0.5
    assert float(row["distortion"]) == pytest.approx(mean) and float(row["distortion_std"]) == pytest.approx(std)
    assert f"| categorical | 8 | 2 |  |  | 8.0 | 784.0 | 0.001 | 3 | {mean:.4f} ± {std:.4f} |" in result.stdout
