"""Procedural numpy renderer: an image from a stimulus's category and low-level latent.

Shape and aspect come from the category, stripes from the stripes attribute; position,
size, orientation, colour, value, background and texture frequency from the low-level
parameters. Everything is vectorised over a batch of images.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fmri2img.data.simulate.stimuli import SHAPES, Categories, StimulusBank

PNG_COMPRESSION_LEVEL = 3  # frames are many and large at nsd scale; favour speed
# Keep each batch's float work arrays around this many pixels (memory, not speed).
_PIXELS_PER_BATCH = 2_000_000


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB in [0, 1]; inputs of shape (n,), output (n, 3)."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        axis=0,
    )
    return table[i, np.arange(h.shape[0])]


def _shape_field(code: int, u: np.ndarray, v: np.ndarray, aspect: np.ndarray,
                 lobes: np.ndarray) -> np.ndarray:
    """Implicit function of a shape in object units: < 1 inside, 1 on the edge."""
    name = SHAPES[code]
    a = aspect[:, None, None]
    if name == "ellipse":
        return np.sqrt(u**2 + (v / a) ** 2)
    if name == "rectangle":
        return np.maximum(np.abs(u), np.abs(v) / a)
    if name == "triangle":
        vv = v / a
        return np.maximum(-2 * vv, np.sqrt(3) * np.abs(u) + vv)
    if name == "diamond":
        return np.abs(u) + np.abs(v) / a
    if name == "star":
        r = np.sqrt(u**2 + v**2)
        phi = np.arctan2(v, u)
        return r / (1 + 0.35 * np.cos(lobes[:, None, None] * phi))
    if name == "ring":
        r = np.sqrt(u**2 + (v / np.maximum(a, 0.7)) ** 2)
        return np.abs(r - 0.7) / 0.3
    bar_uv = np.maximum(np.abs(u), np.abs(v) / a)
    if name == "bar":
        return bar_uv
    if name == "cross":
        return np.minimum(bar_uv, np.maximum(np.abs(v), np.abs(u) / a))
    raise ValueError(f"unknown shape {name}")


def render_rows(bank: StimulusBank, cats: Categories, rows: np.ndarray, size: int) -> np.ndarray:
    """Render bank rows to uint8 RGB images of shape (n, size, size, 3)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.shape[0], size, size, 3), dtype=np.uint8)
    step = max(1, _PIXELS_PER_BATCH // (size * size))
    for start in range(0, rows.shape[0], step):
        out[start : start + step] = _render_batch(bank, cats, rows[start : start + step], size)
    return out


def _render_batch(bank: StimulusBank, cats: Categories, rows: np.ndarray, size: int) -> np.ndarray:
    n = rows.shape[0]
    p = bank.params[rows].astype(np.float32)
    if np.isnan(p).any():
        raise ValueError("cannot render a stimulus without low-level parameters (a word)")
    px, py, obj, theta, hue, sat, val, bg, lsf = (c[:, None, None] for c in p.T)
    cat = bank.category[rows].astype(int)
    stripes = bank.attributes[rows, 0]
    g = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5).astype(np.float32)
    gx = g[None, None, :]
    gy = g[None, :, None]
    dx = gx - px
    dy = gy - py
    ct, st = np.cos(theta), np.sin(theta)
    # Image rows grow downwards, so this rotation turns theta counter-clockwise on screen.
    u = (dx * ct - dy * st) / obj
    v = (dx * st + dy * ct) / obj
    del dx, dy

    f = np.empty((n, size, size), dtype=np.float32)
    codes = cats.shape[cat]
    for code in np.unique(codes):
        sel = codes == code
        f[sel] = _shape_field(int(code), u[sel], v[sel], cats.aspect[cat[sel]].astype(np.float32),
                              cats.lobes[cat[sel]].astype(np.float32))
    # About one pixel of anti-aliasing at the edge.
    mask = np.clip(0.5 + (1.0 - f) * (size * obj), 0.0, 1.0)
    del f

    cycles = np.float32(np.pi) * 2.0 ** lsf
    shading = np.empty_like(mask)
    if stripes.any():
        shading[stripes] = 0.12 + 0.88 * np.clip(
            0.5 + 2.0 * np.sin(cycles[stripes] * u[stripes]), 0.0, 1.0)
    plain = ~stripes
    if plain.any():
        shading[plain] = (1.0 - 0.2 * np.clip(v[plain], -1, 1)
                          + 0.08 * np.sin(cycles[plain] * (u[plain] + v[plain])))
    del u, v

    obj_rgb = hsv_to_rgb(hue.ravel(), sat.ravel(), val.ravel()).astype(np.float32)
    bg_rgb = hsv_to_rgb((hue.ravel() + 0.5) % 1.0, 0.15 * sat.ravel(), bg.ravel()).astype(
        np.float32)
    ang = hue * np.float32(2 * np.pi)
    background = (1.0 + 0.15 * (gx * np.cos(ang) + gy * np.sin(ang))) * (1 - mask)
    shading *= mask
    img = np.empty((n, size, size, 3), dtype=np.uint8)
    for c in range(3):
        chan = background * bg_rgb[:, c, None, None] + shading * obj_rgb[:, c, None, None]
        chan *= 255.0
        np.clip(chan, 0, 255, out=chan)
        img[..., c] = np.rint(chan)
    return img


def blank_image(size: int, grey: float = 0.5) -> np.ndarray:
    return np.full((size, size, 3), round(grey * 255), dtype=np.uint8)


def stamp_cue(image: np.ndarray, letter: str, centre: bool = False) -> np.ndarray:
    """Draw the cue letter on a copy of the image (bottom centre, or centre for blanks)."""
    size = image.shape[0]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=max(8, size // 6))
    xy = (size / 2, size / 2 if centre else size * 0.88)
    stroke = max(1, size // 80)
    draw.text(xy, letter, fill=(255, 255, 255), font=font, anchor="mm", stroke_width=stroke,
              stroke_fill=(0, 0, 0))
    return np.asarray(pil)


def png_bytes(image: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESSION_LEVEL)
    return buf.getvalue()
