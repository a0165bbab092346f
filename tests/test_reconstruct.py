"""``reconstruct`` end to end on a small simulated study: eval's predictions through tiny
diffusion pipelines (random weights, built from configs and saved like real ones), the
compatibility checks, resuming, the image metrics in eval and in the ablation table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmri2img.cli import main
from fmri2img.models.diffusion.tiny import build_tiny_pipeline

pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning",
                                        "ignore::DeprecationWarning")

FAST = ["--generator", "steps=2", "--generator", "batch_size=4", "--pixel-size", "64",
        "--n-bootstrap", "50", "--feature-nets", "effnet_lite0", "alexnet2"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def evaluated(planted_study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """subj01's ridge decoder scored on its imagery session (imagery + vision trials)."""
    out = tmp_path_factory.mktemp("recon_eval") / "eval"
    assert main(["eval", "--index", planted_study.imagery_index("subj01"), "--checkpoint",
                 planted_study.checkpoint("ridge", "subj01"), "--mode", "imagery",
                 "--output-dir", str(out), "--n-bootstrap", "50", "--n-permutations", "20",
                 "--no-figures"]) == 0
    return out


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pipelines")
    build_tiny_pipeline("unclip", base / "unclip", embed_dim=512, image_size=32,
                        embedding_model="simulated-clip-like", normalization="l2")
    build_tiny_pipeline("unclip", base / "unclip16", embed_dim=16, image_size=32)
    build_tiny_pipeline("kandinsky", base / "kandinsky", embed_dim=512,
                        embedding_model="another-clip", normalization="l2")
    build_tiny_pipeline("unclip", base / "unclip_raw", embed_dim=512, image_size=32,
                        embedding_model="simulated-clip-like")
    return base


def _eval_inputs(evaluated: Path) -> list[str]:
    meta = json.loads((evaluated / "predictions.json").read_text())
    return [meta["index"], "--checkpoint", *meta["checkpoint"]]


def test_eval_writes_what_reconstruct_needs(evaluated: Path) -> None:
    meta = json.loads((evaluated / "predictions.json").read_text())
    assert set(meta["domains"]) == {"imagery", "vision"}
    emb = meta["embedding"]
    assert emb["dim"] == 512 and emb["tokens"] == 1 and emb["model"] == "simulated-clip-like"
    with np.load(evaluated / "predictions.npz") as z:
        assert z["predictions"].shape == (12, 512) and z["vision_predictions"].shape == (12, 512)


def test_reconstruct_end_to_end_and_resume(evaluated: Path, pipelines: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "rec"
    args = ["reconstruct", "--predictions", str(evaluated), "--pipeline",
            str(pipelines / "unclip"), "--output-dir", str(out), *FAST]
    assert main(args) == 0
    result = json.loads((out / "reconstruct.json").read_text())
    assert result["untrained_test_pipeline"] is True and "untrained" in result["label"]
    assert result["trained_on"]["dim"] == result["pipeline_expects"]["dim"] == 512
    with np.load(out / "reconstructions.npz") as z:
        first = {k: z[k] for k in z.files}
    assert first["imagery_images"].shape == (12, 32, 32, 3)
    assert first["imagery_images"].dtype == np.uint8
    assert len(list((out / "images" / "vision").glob("*.png"))) == 12
    assert (out / "grid.png").exists() and (out / "grid.pdf").exists()
    metrics = json.loads((out / "image_metrics.json").read_text())["domains"]["imagery"]
    for name in ("pixcorr", "ssim", "psnr"):
        assert np.isfinite(metrics[name]["mean"]) and len(metrics[name]["ci"]) == 2
    assert metrics["effnet_lite0"]["comparable"] is False
    assert 0 <= metrics["effnet_lite0"]["mean"] <= 1
    assert "unavailable" in metrics["alexnet2"]  # no weights here: never a random-weights score
    assert "Untrained test pipeline" in (out / "image_metrics.md").read_text()
    # killed after some images (one half-written): the rerun makes the missing ones only,
    # and they are the same images
    pngs = sorted((out / "images" / "imagery").glob("*.png"))
    for p in pngs[5:]:
        p.unlink()
    pngs[0].write_bytes(b"\x89PNG truncated")
    (out / "reconstruct.json").unlink()
    assert main(args) == 0
    with np.load(out / "reconstructions.npz") as z:
        for k in first:
            np.testing.assert_array_equal(z[k], first[k])
    # eval scores the same images the same way
    again = tmp_path / "eval_images"
    eval_args = ["eval", "--index", *_eval_inputs(evaluated), "--mode", "imagery",
                 "--output-dir", str(again), "--n-bootstrap", "50", "--n-permutations",
                 "20", "--no-figures", "--reconstructions", str(out)]
    assert main(eval_args) == 0
    scored = json.loads((again / "metrics.json").read_text())["image_metrics"]["domains"]
    assert scored["imagery"]["pixcorr"]["per_item"] == metrics["pixcorr"]["per_item"]
    assert set(scored) == {"imagery", "vision"}


def test_reconstruct_refuses_incompatible_pipelines(evaluated: Path, pipelines: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    def err() -> str:
        return " ".join(capsys.readouterr().err.split())  # rich wraps long lines

    out = tmp_path / "rec"
    base = ["reconstruct", "--predictions", str(evaluated), "--output-dir", str(out), *FAST]
    assert main([*base, "--pipeline", str(pipelines / "unclip16")]) == 2
    text = err()
    assert "1 x 512" in text and "1 x 16" in text and "dimension differs" in text
    assert not out.exists()
    # another embedding model: refused, naming both, unless the user accepts it
    kandinsky = [*base, "--pipeline", str(pipelines / "kandinsky"), "--backend", "kandinsky"]
    assert main(kandinsky) == 2
    text = err()
    assert "simulated-clip-like" in text and "another-clip" in text
    # a pipeline taking raw embeddings, for a decoder of L2-normalised ones
    assert main([*base, "--pipeline", str(pipelines / "unclip_raw")]) == 2
    assert "normalization differs" in err()
    assert main([*kandinsky, "--allow-mismatch", "model", "--domains", "imagery",
                 "--limit", "2", "--no-metrics"]) == 0
    assert len(list((out / "images" / "imagery").glob("*.png"))) == 2
    # an output that is, or holds, the predictions' folder is refused before any work
    for bad in (evaluated, evaluated.parent):
        assert main(["reconstruct", "--predictions", str(evaluated), "--pipeline",
                     str(pipelines / "unclip"), "--output-dir", str(bad)]) == 2
        assert "--output-dir" in err()
    assert main(["reconstruct", "--predictions", str(tmp_path), "--pipeline",
                 str(pipelines / "unclip"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "predictions.npz" in err()


def test_ablation_table_carries_image_metrics(planted_study, pipelines: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    assert main(["ablate", "--index", planted_study.imagery_index(), "--checkpoint",
                 planted_study.checkpoint("ridge"), "--subjects", "1", "--methods", "direct",
                 "--output-dir", str(out), "--n-bootstrap", "50", "--n-permutations", "20",
                 "--reconstruct-pipeline", str(pipelines / "unclip"),
                 "--reconstruct-options", "generator={steps: 2}",
                 "--reconstruct-options", "pixel_size=64",
                 "--reconstruct-options", "feature_nets=[effnet_lite0]"]) == 0
    table = (out / "results_table.md").read_text()
    assert "image PixCorr" in table and "image SSIM" in table and "image effnet_lite0" in table
    row = json.loads((out / "metrics_all.json").read_text())["rows"][0]
    assert row["reconstruction"]["untrained_test_pipeline"] is True
    assert (out / "reconstruction" / "direct" / "subj01" / "grid.png").exists()
