"""examples/miyawaki.ipynb runs end to end on the real Miyawaki 2008 recording and reports
retrieval top-1/5/10 with CIs on its held-out test trials."""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
from conftest import SHARED_DATA, needs_shared

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "miyawaki.ipynb"


@needs_shared(SHARED_DATA / "miyawaki2008")
def test_miyawaki_notebook_executes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FMRI2IMG_DATA", str(SHARED_DATA))
    monkeypatch.setenv("FMRI2IMG_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    res = json.loads((tmp_path / "notebook_results.json").read_text())
    assert res["n_items"] == 10  # 12 test trials of 10 distinct stimuli, averaged per item
    for k in ("retrieval_top1", "retrieval_top5", "retrieval_top10"):
        lo, hi = res[k]["ci"]
        assert 0 <= lo <= res[k]["value"] <= hi <= 1, k
    # real V1 signal: identification far above chance on trials the decoder never saw
    assert res["retrieval_top1"]["value"] > res["retrieval_top1"]["chance"]
    assert res["two_way"]["value"] > 0.8 and res["two_way"]["p"] < 0.01
