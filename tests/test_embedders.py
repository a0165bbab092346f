"""Embedding targets: backends, stimulus images and captions of an index, tables and reuse.

Real offline weights (EfficientNet-Lite0, MiniLM) are tested as they are; CLIP code paths
(open_clip, transformers) with tiny randomly initialised models built from a config.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
from conftest import SHARED_DATA, needs_shared
from PIL import Image, ImageDraw

from fmri2img.data.imagery import ImageryIndexConfig, build_imagery_index
from fmri2img.data.index import read_index
from fmri2img.data.matfile import MatIndexConfig, build_mat_index
from fmri2img.data.nsd import NSDIndexConfig, build_nsd_index
from fmri2img.data.nsd_layout import NSDPaths
from fmri2img.data.simulate import SimulationConfig, simulate
from fmri2img.errors import DataError
from fmri2img.io.embedding_table import read_embedding_table, write_embedding_table
from fmri2img.targets import embed as embed_mod
from fmri2img.targets.embed import EmbedConfig, embed_captions, embed_index, load_targets
from fmri2img.targets.embedders import Embedder, make_embedder, parse_spec
from fmri2img.targets.images import index_stimuli, rgb_array

MIYAWAKI = SHARED_DATA / "miyawaki2008" / "miyawaki_conditions_2to5_combined_sharp.mat"
TINY_CLIP = {"embed_dim": 8,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 8,
                            "head_width": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                          "layers": 1}}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("embsim")
    root = simulate(base / "nsd", SimulationConfig.from_scale("small", seed=0, subjects=(1,)))
    nsd = base / "idx" / "s1.parquet"
    img = base / "idx" / "i1.parquet"
    build_nsd_index(NSDIndexConfig(nsd_root=root, subject=1, output=nsd))
    build_imagery_index(ImageryIndexConfig(nsd_root=root, subject=1, output=img))
    return {"root": Path(root), "nsd": nsd, "imagery": img, "base": base}


def _write_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = _write_json(tmp_path_factory.mktemp("oc") / "tiny_clip.json", TINY_CLIP)
    return f"open_clip:{cfg}:none"


@pytest.fixture(scope="module")
def effnet() -> Embedder:
    return make_embedder("effnet-lite0", batch_size=4)


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return make_embedder("minilm", batch_size=8)


@pytest.fixture
def loaded(effnet: Embedder, minilm: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let embed_index use the already loaded offline models (loading costs seconds)."""
    import fmri2img.targets.embed as embed_mod

    real = embed_mod.make_embedder
    cache = {"effnet-lite0": effnet, "minilm": minilm}

    def make(spec: str, *, device: str = "cpu", batch_size: int = 32,
             normalize: bool = False) -> Embedder:
        e = cache.get(spec)
        if e is None or normalize or device != "cpu":
            return real(spec, device=device, batch_size=batch_size, normalize=normalize)
        e.batch_size = batch_size
        return e

    monkeypatch.setattr(embed_mod, "make_embedder", make)


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: 256 printable stand-ins for the 256 byte values."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIPModel with a byte-level BPE tokenizer written offline."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    d = tmp_path_factory.mktemp("hfclip")
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["t h", "th e</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    _write_json(d / "vocab.json", vocab)
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_json(d / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer",
                                              "model_max_length": 16})
    text = {"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
              ).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def _shapes() -> dict[str, np.ndarray]:
    """224-px renderings (no resampling before the model) of things ImageNet knows."""
    checker = Image.new("RGB", (224, 224), (255, 255, 255))
    d = ImageDraw.Draw(checker)
    for i in range(0, 224, 28):
        for j in range(0, 224, 28):
            if (i // 28 + j // 28) % 2:
                d.rectangle([i, j, i + 27, j + 27], fill=(0, 0, 0))
    ball = Image.new("RGB", (224, 224), (120, 180, 255))
    ImageDraw.Draw(ball).ellipse([60, 60, 164, 164], fill=(255, 140, 0))
    bar = Image.new("L", (224, 224), 128)
    ImageDraw.Draw(bar).rectangle([100, 20, 124, 204], fill=255)
    return {"checker": np.asarray(checker), "ball": np.asarray(ball), "bar": np.asarray(bar)}


def _mat(path: Path) -> Path:
    """Three 4x4 binary stimuli shown twice each (the seed decoder's .mat layout)."""
    rng = np.random.default_rng(0)
    imgs = [np.eye(4), np.fliplr(np.eye(4)), np.pad(np.ones((2, 2)), 1)]
    flat = np.stack([imgs[i].reshape(-1, order="F") for i in (0, 1, 2, 0, 1, 2)])
    scipy.io.savemat(path, {"fmriTrn": rng.normal(size=(6, 5)), "fmriTest": rng.normal(size=(2, 5)),
                            "stimTrn": flat, "stimTest": flat[:2]})
    return path


# ----------------------------------------------------------------------------- backends
def test_effnet_real_weights(effnet: Embedder) -> None:
    from timm.data import ImageNetInfo

    shapes = _shapes()
    imgs = [shapes["checker"], shapes["ball"], shapes["bar"]]
    a = effnet.embed_images(imgs)
    assert a.shape == (3, 1280) and a.dtype == np.float32 and effnet.dim == 1280
    np.testing.assert_array_equal(a, effnet.embed_images(imgs))  # deterministic on CPU
    # other batches, and the (H, W) bar as its RGB stack: the same vectors
    effnet.batch_size = 2
    try:
        b = effnet.embed_images([*imgs[:2], np.repeat(shapes["bar"][..., None], 3, axis=2)])
    finally:
        effnet.batch_size = 4
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert np.corrcoef(a)[0, 1] < 0.99
    # the ImageNet weights really are loaded: the classifier names what was drawn
    info = ImageNetInfo()
    with torch.inference_mode():
        logits = effnet.model.get_classifier()(torch.from_numpy(a))
    top = [[info.index_to_description(int(i)) for i in row.topk(3).indices] for row in logits]
    assert any("crossword" in name for name in top[0]), top[0]
    assert "ping-pong" in top[1][0], top[1]
    assert effnet.preprocessing["mean"] == [0.5, 0.5, 0.5] and effnet.model_files[0].exists()


def test_minilm_real_weights(minilm: Embedder) -> None:
    texts = ["a striped zebra on the grass", "a zebra with black and white stripes",
             "a ripe yellow banana"]
    e = minilm.embed_texts(texts)
    assert e.shape == (3, 384) and e.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    np.testing.assert_array_equal(e, minilm.embed_texts(texts))
    with pytest.raises(DataError, match="no image tower"):
        minilm.embed_images([np.zeros((4, 4), np.uint8)])


def test_open_clip_tiny_from_config(clip_spec: str, tmp_path: Path) -> None:
    a = make_embedder(clip_spec, batch_size=2)
    b = make_embedder(clip_spec, batch_size=3, normalize=True)
    imgs = [np.full((40, 30, 3), v, np.uint8) for v in (0, 90, 200)] + [_shapes()["checker"]]
    ia, ib = a.embed_images(imgs), b.embed_images(imgs)
    assert ia.shape == (4, 8) and a.dim == 8
    # seeded random init: the same config builds the same model
    np.testing.assert_allclose(ia / np.linalg.norm(ia, axis=1, keepdims=True), ib, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ib, axis=1), 1.0, atol=1e-5)
    ta = a.embed_texts(["a zebra", "a banana", "stripes"])
    assert ta.shape == (3, 8) and not np.allclose(ta[0], ta[1])
    assert a.preprocessing["size"] == [32, 32] and "random-init" in a.model_id
    # open_clip's own folder layout (no weights in it: random init, same seed, same model)
    folder = tmp_path / "ld"
    folder.mkdir()
    _write_json(folder / "open_clip_config.json", {"model_cfg": TINY_CLIP})
    c = make_embedder(f"open_clip:local-dir:{folder}")
    np.testing.assert_allclose(c.embed_images(imgs), ia, atol=1e-5)
    assert [p.name for p in c.model_files] == ["open_clip_config.json"]


def test_hf_clip_tiny(hf_clip_dir: Path) -> None:
    e = make_embedder(f"hf-clip:{hf_clip_dir}", batch_size=2)
    imgs = [np.full((40, 50, 3), v, np.uint8) for v in (10, 120, 250)]
    x = e.embed_images(imgs)
    assert x.shape == (3, 8) and e.dim == 8 and not np.allclose(x[0], x[2])
    np.testing.assert_array_equal(x, e.embed_images(imgs))
    t = e.embed_texts(["the cat", "a dog on the hill", "the"])
    assert t.shape == (3, 8) and not np.allclose(t[0], t[1])
    assert e.preprocessing["image_processor"]["crop_size"] == {"height": 32, "width": 32}
    assert any(p.name == "model.safetensors" for p in e.model_files)
    # no tokenizer: the image tower still works, the text tower is a clear error
    bare = hf_clip_dir.parent / "bare"
    shutil.copytree(hf_clip_dir, bare)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (bare / name).unlink()
    only_images = make_embedder(f"hf-clip:{bare}")
    np.testing.assert_allclose(only_images.embed_images(imgs), x, atol=1e-6)
    with pytest.raises(DataError, match="no text tower"):
        only_images.embed_texts(["the cat"])


def test_specs_and_devices() -> None:
    assert parse_spec("EfficientNet-Lite0")[1] == "effnet-lite0"
    assert parse_spec("open_clip:ViT-B-32:laion2b_s34b_b79k")[1].endswith("b79k")
    assert parse_spec("open_clip:hf-hub:laion/CLIP-ViT-B-32")[0].backend == "open_clip"
    for bad in ("clip", "hf-clip:", "open_clip::x", "resnet50"):
        with pytest.raises(ValueError, match="embedder"):
            parse_spec(bad)
    with pytest.raises(DataError, match="unknown embedder"):
        make_embedder("nope")
    with pytest.raises(DataError, match="unknown device"):
        make_embedder("effnet-lite0", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="no CUDA device"):
            make_embedder("effnet-lite0", device="cuda:0")
    with pytest.raises(ValueError, match="device"):
        EmbedConfig(index="i.parquet", embedder="minilm", output="o.parquet", device="cuda:x")
    assert rgb_array(np.zeros((2, 3), np.uint8)).shape == (2, 3, 3)
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent: the display's mid-gray
    assert (rgb_array(rgba) == 128).all()


# ----------------------------------------------------------------------------- stimuli
def test_index_stimuli_nsd(sim: dict[str, Path], clip_spec: str, tmp_path: Path) -> None:
    df, _ = read_index(sim["nsd"])
    found = index_stimuli(sim["nsd"])
    assert sorted(found.keys) == sorted(df["stimulus"].unique())
    ids = [s.stimulus_id for s in found.stimuli]
    assert ids == sorted(ids)  # sequential HDF5 reads
    pick = found.stimuli[:3] + found.stimuli[-2:]
    with h5py.File(NSDPaths(sim["root"]).stimuli_hdf5, "r") as f:
        want = [f["imgBrick"][s.stimulus_id] for s in pick]
    for got, exp in zip(found.load_images(pick), want, strict=True):
        np.testing.assert_array_equal(got, exp)
    sim_table = pd.read_parquet(sim["root"] / "targets/clip_like.parquet")
    caps = dict(zip(sim_table["stimulus"], sim_table["caption"], strict=True))
    assert all(s.caption == caps[s.key] for s in found.stimuli)
    out = embed_index({"index": sim["nsd"], "embedder": clip_spec,
                       "output": tmp_path / "t.parquet", "batch_size": 256})
    keys, emb, meta, table_caps = read_embedding_table(out)
    assert keys == found.keys and emb.shape == (len(found), 8)
    assert table_caps == [s.caption for s in found.stimuli]
    assert meta["embedder"] == clip_spec and meta["index"]["checksum"].startswith("xxh3")
    assert meta["sources"][0]["path"].endswith("nsd_stimuli.hdf5") and meta["dim"] == 8
    assert meta["software"]["open_clip_torch"] and meta["image_source"]["kind"] == "nsd_hdf5"


def test_index_stimuli_imagery(sim: dict[str, Path], tmp_path: Path) -> None:
    found = index_stimuli(sim["imagery"])
    by = {s.key: s for s in found.stimuli}
    words = {k: s.caption for k, s in by.items() if s.origin == "word"}
    assert words == {"nsdimagery:S": "stripes", "nsdimagery:Z": "zebra",
                     "nsdimagery:M": "mammal", "nsdimagery:Y": "yellow",
                     "nsdimagery:N": "banana", "nsdimagery:F": "fruit"}
    assert by["nsdimagery:H"].origin == "png" and by["nsdimagery:H"].path.exists()
    with pytest.raises(DataError, match="no image, only a word"):
        found.check_images()
    # a complex target is one picture whether read from imgBrick or from its raw PNG
    df, _ = read_index(sim["imagery"])
    key = df.loc[(df.stimulus_set == "complex") & df.stimulus.str.startswith("nsd:"),
                 "stimulus"].iloc[0]
    root2 = tmp_path / "nsd"
    shutil.copytree(sim["root"], root2)
    NSDPaths(root2).stimuli_hdf5.unlink()
    # without the simulator's table, NSD images take their COCO caption (lowest annotation id)
    (root2 / "targets/clip_like.parquet").unlink()
    info = pd.read_csv(NSDPaths(root2).stim_info, index_col=0)
    nsd_id = int(key.split(":")[1])
    coco, split = int(info["cocoId"].iat[nsd_id]), info["cocoSplit"].iat[nsd_id]
    ann = root2 / f"nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json"
    ann.parent.mkdir(parents=True)
    _write_json(ann, {"annotations": [
        {"id": 9, "image_id": coco, "caption": "A second  caption."},
        {"id": 4, "image_id": coco, "caption": "A person riding\na bike."},
        {"id": 5, "image_id": coco + 1, "caption": "another image"}]})
    idx2 = tmp_path / "i.parquet"
    build_imagery_index(ImageryIndexConfig(nsd_root=root2, subject=1, output=idx2))
    alt = {s.key: s for s in index_stimuli(idx2).stimuli}
    assert alt[key].origin == "png" and alt[key].caption == "A person riding a bike."
    assert alt["nsdimagery:Z"].caption == "zebra" and alt["nsdimagery:H"].caption is None
    np.testing.assert_array_equal(found.load_images([by[key]])[0],
                                  index_stimuli(idx2).load_images([alt[key]])[0])
    exemplar = next(s for s in alt.values() if s.origin == "hdf5")  # shown for a concept
    with pytest.raises(DataError, match="not found"):
        index_stimuli(idx2).check_images([exemplar])


def test_mat_stimuli_errors_and_explicit_captions(tmp_path: Path, loaded: None) -> None:
    _, meta = build_mat_index(MatIndexConfig(mat=_mat(tmp_path / "x.mat"),
                                             output=tmp_path / "x.parquet"))
    found = index_stimuli(tmp_path / "x.parquet")
    assert len(found) == 3 and all(s.caption is None for s in found.stimuli)
    stored = np.load(Path(meta["cache"]) / "stimuli.npy")
    img = found.load_images()[1]
    assert img.shape == (4, 4, 3) and (img == stored[1][..., None]).all()
    caps = tmp_path / "caps.csv"
    pd.DataFrame({"stimulus_id": [0, 2], "caption": ["a diagonal", "a square"]}).to_csv(caps)
    with_caps = index_stimuli(tmp_path / "x.parquet", captions=caps)
    assert [s.caption for s in with_caps.stimuli] == ["a diagonal", None, "a square"]
    with pytest.raises(DataError, match="no captions are known"):
        embed_captions({"index": tmp_path / "x.parquet", "embedder": "minilm",
                        "output": tmp_path / "c.parquet"})
    with pytest.raises(DataError, match="no text tower"):
        embed_captions({"index": tmp_path / "x.parquet", "embedder": "effnet-lite0",
                        "output": tmp_path / "c.parquet", "captions": caps})
    (Path(meta["cache"]) / "stimuli.npy").unlink()
    with pytest.raises(DataError, match=r"stimuli\.npy: stimulus images file not found"):
        embed_index({"index": tmp_path / "x.parquet", "embedder": "effnet-lite0",
                     "output": tmp_path / "e.parquet"})
    assert not (tmp_path / "e.parquet").exists()


# ----------------------------------------------------------------------------- tables
def _meta(path: Path) -> dict:
    return read_embedding_table(path)[2]


def test_embed_index_reuse_and_invalidation(sim: dict[str, Path], clip_spec: str,
                                            tmp_path: Path, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    caplog.set_level(logging.INFO, logger="fmri2img")
    out = tmp_path / "t.parquet"
    cfg = EmbedConfig(index=sim["imagery"], embedder=clip_spec, output=out, batch_size=16)
    assert embed_index(cfg) == out
    keys, _, meta, _ = read_embedding_table(out)
    created = meta["created"], out.stat().st_mtime_ns

    def run(**change: object) -> tuple[str, ...]:
        caplog.clear()
        embed_index(cfg.model_copy(update=change))
        m = _meta(out)
        return m["created"], out.stat().st_mtime_ns, caplog.text

    *same, text = run()
    assert tuple(same) == created and "reusing" in text
    *same, text = run(batch_size=7)  # not part of the identity
    assert tuple(same) == created
    *_, text = run(normalize=True)
    assert "recomputing: embedder.normalize changed (false -> true)" in text
    np.testing.assert_allclose(np.linalg.norm(read_embedding_table(out)[1], axis=1), 1, atol=1e-5)
    other = _write_json(tmp_path / "wider.json", {**TINY_CLIP, "embed_dim": 12})
    *_, text = run(embedder=f"open_clip:{other}:none")
    assert "recomputing" in text and _meta(out)["dim"] == 12
    embed_index(cfg)
    before = read_embedding_table(out)[1]
    # the image source: a touch alone keeps the table (same content), an edit does not
    h5 = NSDPaths(sim["root"]).stimuli_hdf5
    os.utime(h5, ns=(h5.stat().st_atime_ns, h5.stat().st_mtime_ns + 10**9))
    *_, text = run()
    assert "reusing" in text
    assert keys[0].startswith("nsd:")  # imgBrick rows come first
    first = int(keys[0].split(":")[1])
    backup = tmp_path / "brick.hdf5"
    shutil.copy2(h5, backup)
    try:
        with h5py.File(h5, "r+") as f:
            f["imgBrick"][first] = 255 - f["imgBrick"][first]
        *_, text = run()
        assert "image source" in text and "changed" in text
        after = read_embedding_table(out)[1]
        assert not np.allclose(after[0], before[0])
        np.testing.assert_allclose(after[1:], before[1:], atol=1e-5)
    finally:
        shutil.copy2(backup, h5)
    *_, text = run(reuse=False)
    assert "reuse disabled" in text
    # a file that is not an embedding table is replaced, with the reason logged
    out.write_text("not parquet")
    *_, text = run()
    assert "not a readable embedding table" in text and len(read_embedding_table(out)[0])


def test_embed_imagery_concepts(sim: dict[str, Path], clip_spec: str, minilm: Embedder,
                                loaded: None, tmp_path: Path) -> None:
    out = embed_index({"index": sim["imagery"], "embedder": clip_spec,
                       "output": tmp_path / "clip.parquet"})
    keys, emb, meta, caps = read_embedding_table(out)
    words = {k: c for k, c in zip(keys, caps, strict=True) if k in meta["from_text"]}
    assert sorted(words.values()) == ["banana", "fruit", "mammal", "stripes", "yellow", "zebra"]
    clip = make_embedder(clip_spec)
    rows = [keys.index(k) for k in words]
    np.testing.assert_allclose(emb[rows], clip.embed_texts(list(words.values())), atol=1e-5)
    assert len(keys) == 36 and meta["identity"]["conceptual"] == "text"
    # left out on request, and by default for image-only models; refused as text for those
    skip = embed_index({"index": sim["imagery"], "embedder": clip_spec, "conceptual": "skip",
                        "output": tmp_path / "skip.parquet"})
    k2, e2, m2, _ = read_embedding_table(skip)
    assert len(k2) == 30 and sorted(m2["skipped"]["no image (conceptual target)"]) == sorted(
        words)
    np.testing.assert_array_equal(e2, emb[[keys.index(k) for k in k2]])
    found = index_stimuli(sim["imagery"])
    cfg = EmbedConfig(index=sim["imagery"], embedder="effnet-lite0", output=tmp_path / "x")
    plan = embed_mod._plan(cfg, found, has_image=True, has_text=False, joint=False)
    assert len(plan.items) == 30 and plan.conceptual == "skip"
    with pytest.raises(DataError, match="image-text model"):
        embed_index(cfg.model_copy(update={"conceptual": "text"}))
    # captions: every stimulus has one, concepts by their word
    txt = embed_captions({"index": sim["imagery"], "embedder": "minilm",
                          "output": tmp_path / "txt.parquet"})
    k3, e3, m3, c3 = read_embedding_table(txt)
    assert len(k3) == 36 and m3["kind"] == "text" and e3.shape[1] == 384
    assert dict(zip(k3, c3, strict=True))["nsdimagery:Z"] == "zebra"
    np.testing.assert_allclose(e3, minilm.embed_texts(c3), atol=1e-5)


def test_load_targets(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    keys = [f"nsd:{i}" for i in range(8)]
    emb = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    write_embedding_table(path, keys, emb, meta={"model_id": "toy"})
    got = load_targets(path, ["nsd:5", "nsd:1", "nsd:5"], expected_dim=3)
    np.testing.assert_array_equal(got, emb[[5, 1, 5]])
    want = ["nsd:1", *(f"nsd:{i}" for i in range(100, 107))]
    with pytest.raises(DataError, match=r"7 of 8 stimuli have no embedding: nsd:100, nsd:101, "
                                        r"nsd:102, nsd:103, nsd:104 and 2 more") as err:
        load_targets(path, want)
    assert err.value.path == path
    with pytest.raises(DataError, match="3-d .toy.; expected 512-d"):
        load_targets(path, keys, expected_dim=512)
    with pytest.raises(DataError, match="null"):
        load_targets(path, ["nsd:1", None])  # type: ignore[list-item]
    with pytest.raises(DataError, match="not found"):
        load_targets(tmp_path / "none.parquet", keys)


@needs_shared(MIYAWAKI)
def test_miyawaki_effnet(tmp_path: Path, effnet: Embedder, loaded: None) -> None:
    index = tmp_path / "miyawaki.parquet"
    df, meta = build_mat_index(MatIndexConfig(mat=MIYAWAKI, output=index))
    out = embed_index(EmbedConfig(index=index, embedder="effnet-lite0",
                                  output=tmp_path / "emb.parquet", batch_size=10))
    keys, emb, tmeta, _ = read_embedding_table(out)
    assert emb.shape == (20, 1280) and sorted(keys) == sorted(df["stimulus"].unique())
    assert len(np.unique(emb.round(4), axis=0)) == 20  # 20 distinct pictures
    assert tmeta["image_source"]["kind"] == "npy" and tmeta["sources"][0]["path"].endswith(
        "stimuli.npy")
    stored = np.load(Path(meta["cache"]) / "stimuli.npy")
    ids = read_index(index)[0].drop_duplicates("stimulus").set_index("stimulus")["stimulus_id"]
    k = keys[7]
    np.testing.assert_allclose(emb[7], effnet.embed_images([stored[int(ids[k])]])[0], atol=1e-4)
    targets = load_targets(out, df["stimulus"].tolist(), expected_dim=1280)
    assert targets.shape == (len(df), 1280)
