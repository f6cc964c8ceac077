"""The distillation report: runs of one method are seeds (mean +- std), methods are named from their records."""

import json

import pytest
import yaml

from lossy_memory.distillation_report import main


def write_run(folder, source, sampling, accuracy, sampling_source="buffer", targets="teacher", fraction=None, bits=168):
    folder.mkdir(parents=True)
    record = {"source": source, "sampling": sampling, "sampling_source": sampling_source, "targets": targets,
              "lossless_fraction": fraction, "episodes": 1000, "generator_bits_per_item": bits if source == "recollections" else None,
              "accuracy_at": accuracy, "storage/total_bits": 123}
    (folder / "distillation.json").write_text(json.dumps(record))
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"student": {"_target_": "lossy_memory.nets.LeNet5"}}}))


def test_report_averages_seeds_and_names_methods(tmp_path, capsys):
    write_run(tmp_path / "0", "recollections", "RandomSampling", {"10": 0.1, "1000": 0.90})
    write_run(tmp_path / "1", "recollections", "RandomSampling", {"10": 0.2, "1000": 0.94})
    write_run(tmp_path / "2", "recollections", "RandomSampling", {"10": 0.1, "1000": 0.30}, sampling_source="codes")
    write_run(tmp_path / "3", "lossless", "RandomSampling", {"10": 0.1, "1000": 0.80}, fraction=0.02)
    write_run(tmp_path / "4", "real", "RandomSampling", {"10": 0.1, "1000": 0.95}, targets="labels")
    rows = {row["method"]: row for row in main([str(tmp_path)])}
    assert set(rows) == {"buffer sampling, c=168", "code sampling, c=168", "lossless 2% (random)", "real data, true labels"}
    buffer = rows["buffer sampling, c=168"]
    assert buffer["seeds"] == 2 and buffer["1000"] == pytest.approx(92.0) and buffer["1000_std"] == pytest.approx(2.828, abs=1e-3)
    assert "92.00 ± 2.83" in capsys.readouterr().out
    assert (tmp_path / "distillation.csv").is_file() and (tmp_path / "distillation.png").stat().st_size > 0


def test_report_without_runs_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="mnist_distill"):
        main([str(tmp_path)])


def test_a_run_without_its_config_is_not_guessed(tmp_path):
    write_run(tmp_path / "0", "real", "RandomSampling", {"10": 0.5}, targets="labels")
    (tmp_path / "0" / "config.yaml").unlink()
    with pytest.raises(SystemExit, match="no config.yaml beside it"):
        main([str(tmp_path)])
