"""The commands' console: piped output is laid out wide, so tables do not fold values across lines."""

from __future__ import annotations

import sys

from rich.table import Table

from streamseg.cli.common import PIPED_WIDTH, make_console

from ..conftest import streamseg


def test_piped_console_is_wide_unless_columns_is_set(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert not sys.stdout.isatty()
    console = make_console()
    assert console.width == PIPED_WIDTH
    table = Table()
    table.add_column("overrides", overflow="fold")
    value = "train.lr=0.00123456789012346 model.num_layers=10 model.num_maps=64 train.weight_decay=0.0001"
    table.add_row(value)
    console.print(table)
    assert value in capsys.readouterr().out  # on one line
    monkeypatch.setenv("COLUMNS", "60")
    assert make_console().width == 60


def test_cli_table_is_not_folded_when_piped(tmp_path):
    """`streamseg evaluate` prints per-class rows; a long class name stays on one line when piped."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    name = "take_the_long_named_ingredient_out_of_the_cupboard_and_put_it_on_the_counter"
    (gt / "v.txt").write_text(f"{name}\n{name}\nbackground\n")
    (pred / "v.txt").write_text(f"{name}\n{name}\nbackground\n")
    out = streamseg("evaluate", "--pred-dir", str(pred), "--gt-dir", str(gt), env={"COLUMNS": ""})
    assert out.returncode == 0, out.stderr
    assert name in out.stdout
