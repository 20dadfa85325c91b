"""`evo2lite train` options and config values (issue #9): a key given both by --set and by its own option is
not a traceback; numbers are checked (YAML 1.1 reads `1e-4` as a string) with one-line errors."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from evo2lite.apps import train as T
from evo2lite.apps.train_cli import train_command
from evo2lite.errors import ConfigError


def _yaml(tmp_path, body: str):
    path = tmp_path / "t.yaml"
    path.write_text("corpus: c\n" + body)
    return path


def test_numbers_in_yaml(tmp_path):
    cfg = T.load_train_config(_yaml(tmp_path, "lr: 1e-3\nmin_lr: 1e-4\nmax_steps: 7\n"))
    assert cfg.lr == 1e-3 and cfg.min_lr == 1e-4 and cfg.max_steps == 7
    for body, field in (("seq_len: abc\n", "seq_len"), ("max_steps: 2.5\n", "max_steps"),
                        ("lr: fast\n", "lr"), ("eval_every: true\n", "eval_every")):
        with pytest.raises(ConfigError, match=field):
            T.load_train_config(_yaml(tmp_path, body))


def test_set_and_the_dedicated_option_together(tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg, **kw):
        seen["cfg"] = cfg
        return {"steps": 0, "tokens": 0, "wall_s": 0.0, "checkpoint": "-"}

    monkeypatch.setattr(T, "train", fake_train)
    app = typer.Typer()
    app.command()(train_command)
    result = CliRunner().invoke(app, [str(_yaml(tmp_path, "")), "--set", "max_steps=10", "--max-steps", "3",
                                      "--set", "lr=2e-4", "--set", "min_lr=0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].max_steps == 3 and seen["cfg"].lr == 2e-4  # the option wins over --set
    bad = CliRunner().invoke(app, [str(_yaml(tmp_path, "")), "--set", "warmup_steps=soon", "--device", "cpu"])
    assert bad.exit_code == 2 and "warmup_steps" in bad.output and "Traceback" not in bad.output
