"""Tests of birdclef.data.cli: `data kaggle` reports the ingest and the DVC next steps, or a clean error."""

from click.testing import CliRunner
from test_data_fixture import make_competition_layout

from birdclef.data.cli import kaggle_command


def test_kaggle_command_prints_summary_and_next_steps(tmp_path):
    comp = make_competition_layout(tmp_path / "download")
    dest = tmp_path / "data"
    result = CliRunner().invoke(kaggle_command, [str(comp), "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert "8 train_audio files, 2 train, 1 test and 0 labelled validation soundscapes" in result.output
    assert f"dvc add {dest}\n  git add {dest}.dvc\n  dvc push" in result.output
    again = CliRunner().invoke(kaggle_command, [str(comp), "--dest", str(dest)])
    assert again.exit_code == 1 and "exists and is not empty; pass --force" in again.output
    assert "Traceback" not in again.output
