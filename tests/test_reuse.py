"""A finished step is reused only while its config and its input files are unchanged."""

from __future__ import annotations

from pathlib import Path

import yaml

from fmri2img.io.atomic import write_json
from fmri2img.io.reuse import input_files, is_done, run_once


class _Cfg:
    def __init__(self, index: Path, out: Path, alpha: float = 1.0) -> None:
        self.index, self.output_dir, self.alpha = index, out, alpha

    def resolved(self) -> dict:
        return {"index": str(self.index), "output_dir": str(self.output_dir),
                "alpha": self.alpha, "nested": [{"also": str(self.index)}]}


def _step(calls: list) -> object:
    def fn(cfg: _Cfg) -> dict:
        calls.append(cfg.alpha)
        (cfg.output_dir / "config_resolved.yaml").write_text(yaml.safe_dump(cfg.resolved()))
        write_json(cfg.output_dir / "result.json", {"n": len(calls)})
        return {"n": len(calls)}
    return fn


def _setup(tmp_path: Path, content: bytes) -> tuple[Path, Path, _Cfg]:
    index = tmp_path / "subj01_imagery.parquet"
    index.write_bytes(content)
    out = tmp_path / "step"
    out.mkdir()
    return index, out, _Cfg(index, out)


def test_reused_until_an_input_changes(tmp_path: Path) -> None:
    index, out, cfg = _setup(tmp_path, b"zscore=run")
    calls: list = []
    assert input_files(cfg, out) == [index.resolve()]
    assert run_once(cfg, "result.json", _step(calls)) == {"n": 1}
    assert run_once(cfg, "result.json", _step(calls)) == {"n": 1}  # reused
    assert calls == [1.0]
    index.write_bytes(b"zscore=session")  # same path, rebuilt with other options
    assert not is_done(out, cfg, "result.json")
    assert run_once(cfg, "result.json", _step(calls)) == {"n": 2}
    assert run_once(_Cfg(index, out, alpha=2.0), "result.json", _step(calls)) == {"n": 3}
    assert calls == [1.0, 1.0, 2.0]


def test_a_step_without_recorded_inputs_is_redone(tmp_path: Path) -> None:
    _index, out, cfg = _setup(tmp_path, b"x")
    calls: list = []
    _step(calls)(cfg)  # finished, but killed before its inputs were recorded
    assert not is_done(out, cfg, "result.json")
    run_once(cfg, "result.json", _step(calls))
    assert len(calls) == 2 and is_done(out, cfg, "result.json")
