"""Stimulus latents: a semantic latent and a low-level latent for every simulated stimulus.

The bank holds the NSD universe (rows 0..n_universe-1, row = 0-based 73k id) followed by
the extra stimuli of NSD-Imagery: the simple targets, the artwork T, the six conceptual
words and the simple-set attention distractors.

Semantic latent: superordinate mean + category offset + exemplar noise + attribute
directions (stripes, yellow). Low-level latent: standardised physical parameters of the
rendered object (position, size, orientation, colour, value, background, frequency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmri2img.data.nsd_layout import IMAGERY_TARGETS
from fmri2img.data.simulate.config import SimulationConfig
from fmri2img.data.simulate.seeding import stream

ATTRIBUTES = ("stripes", "yellow")
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "star", "ring", "bar", "cross")
OBJECT_SHAPES = SHAPES[:6]  # what NSD-like images are drawn with
PARAM_NAMES = ("pos_x", "pos_y", "size", "theta", "hue", "saturation", "value", "background",
               "log2_frequency")
LOW_FEATURES = ("pos_x", "pos_y", "size", "ori_cos", "ori_sin", "colour_a", "colour_b",
                "value", "background", "log2_frequency")
# The coarse structure of an image (where, how big, which way); the rest is fine detail.
COARSE_FEATURES = ("pos_x", "pos_y", "size", "ori_cos", "ori_sin")
SHAPE_SUPERORDINATE = "shape"  # the simple targets' bars and crosses
SIMPLE_ANGLES = {"H": ("bar", 0.0), "R": ("bar", 45.0), "V": ("bar", 90.0),
                 "L": ("bar", 135.0), "P": ("cross", 0.0), "E": ("cross", 45.0)}
BAR_HALF_WIDTH = 43.0 / 450.0  # the real targets' width / length
SIMPLE_SIZE = 0.4  # half-length of a 450-px bar in a 1000-px-ish frame, as a fraction
CONCEPT_CODES = ("S", "Z", "M", "Y", "N", "F")
CONCEPT_WORDS = {"S": "stripes", "Z": "zebra", "M": "mammal", "Y": "yellow", "N": "banana",
                 "F": "fruit"}
ARTWORK_CODE = "T"


@dataclass(frozen=True)
class Categories:
    names: tuple[str, ...]
    superordinate: tuple[str, ...]  # per category
    superordinates: tuple[str, ...]
    shape: np.ndarray  # (n_cat,) index into SHAPES
    aspect: np.ndarray  # (n_cat,)
    lobes: np.ndarray  # (n_cat,) for stars
    base_hue: np.ndarray  # (n_cat,)
    universe: np.ndarray  # category indices NSD images are drawn from

    def index(self, name: str) -> int:
        return self.names.index(name)

    def members(self, superordinate: str) -> list[int]:
        return [i for i, s in enumerate(self.superordinate) if s == superordinate]

    def as_records(self) -> list[dict]:
        return [
            {
                "index": i,
                "name": n,
                "superordinate": self.superordinate[i],
                "shape": SHAPES[int(self.shape[i])],
                "aspect": float(self.aspect[i]),
                "lobes": int(self.lobes[i]),
                "base_hue": float(self.base_hue[i]),
                "in_nsd": bool(i in set(self.universe.tolist())),
            }
            for i, n in enumerate(self.names)
        ]


def make_categories(cfg: SimulationConfig) -> Categories:
    rng = stream(cfg.seed, "categories")
    names: list[str] = []
    sup: list[str] = []
    for s, members in cfg.categories.items():
        names += members
        sup += [s] * len(members)
    n_nsd = len(names)
    names += ["bar", "cross"]
    sup += [SHAPE_SUPERORDINATE] * 2
    shape = np.concatenate([rng.integers(0, len(OBJECT_SHAPES), n_nsd), [6, 7]])
    aspect = np.concatenate([rng.uniform(0.45, 1.0, n_nsd), [BAR_HALF_WIDTH] * 2])
    lobes = np.concatenate([rng.integers(3, 7, n_nsd), [0, 0]])
    base_hue = np.concatenate([rng.uniform(0, 1, n_nsd), [0.0, 0.0]])
    return Categories(
        names=tuple(names),
        superordinate=tuple(sup),
        superordinates=(*cfg.categories.keys(), SHAPE_SUPERORDINATE),
        shape=shape.astype(np.int16),
        aspect=aspect,
        lobes=lobes.astype(np.int16),
        base_hue=base_hue,
        universe=np.arange(n_nsd),
    )


@dataclass(frozen=True)
class ImageryRoles:
    """Which simulated shared images play which part in NSD-Imagery."""

    complex_ids: dict[str, int]  # W K B C D -> 0-based id
    concept_pools: dict[str, list[int]]  # S Z M Y N F -> shared exemplar ids
    distractor_ids: list[int]  # shared images used as attention distractors (sets B, C)


def choose_roles(cfg: SimulationConfig, sharedix: np.ndarray) -> ImageryRoles:
    rng = stream(cfg.seed, "imagery-roles")
    k = cfg.n_concept_exemplars
    picked = rng.permutation(sharedix)
    pos = 0
    pools: dict[str, list[int]] = {}
    for code in CONCEPT_CODES:
        pools[code] = sorted(int(i) for i in picked[pos : pos + k])
        pos += k
    complex_codes = [t.code for t in IMAGERY_TARGETS if t.stim_set == "B" and t.nsd_id is not None]
    complex_ids = {c: int(picked[pos + j]) for j, c in enumerate(complex_codes)}
    pos += len(complex_codes)
    distractors = sorted(int(i) for i in picked[pos : pos + cfg.n_attention_distractors])
    return ImageryRoles(complex_ids, pools, distractors)


@dataclass
class StimulusBank:
    """Latents of every stimulus. Rows < n_universe are NSD images (row = 0-based id)."""

    n_universe: int
    category: np.ndarray  # (n,) int16, -1 for words that are not a category
    attributes: np.ndarray  # (n, 2) bool: stripes, yellow
    params: np.ndarray  # (n, len(PARAM_NAMES)) float32; NaN for words
    z_sem: np.ndarray  # (n, sem_dim) float32
    z_low: np.ndarray  # (n, len(LOW_FEATURES)) float32, standardised over the universe
    low_mean: np.ndarray  # feature standardisation constants
    low_sd: np.ndarray
    superordinate_means: np.ndarray  # (n_superordinates, sem_dim)
    prototypes: np.ndarray  # (n_cat, sem_dim)
    attribute_directions: np.ndarray  # (2, sem_dim) unit vectors
    word_latents: dict[str, np.ndarray]  # word -> semantic latent
    extra_index: dict[str, int] = field(default_factory=dict)  # name -> row
    # (n, grid*grid) contrast maps, filled in by layout.contrast_maps once rendering is
    # possible
    layout: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # (n, sem_dim) what the embedding model sees of each stimulus beyond what the brain
    # encodes (embed_private_sd); the embedding reads z_sem + z_private, voxels z_sem only
    z_private: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    simple: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bars, crosses

    def z_embedding(self, rows: slice | np.ndarray | list[int]) -> np.ndarray:
        """The semantic latent the embedding model reads, (rows, sem_dim)."""
        return self.z_sem[rows] + self.z_private[rows]

    @property
    def n(self) -> int:
        return int(self.z_sem.shape[0])

    def row(self, name: str) -> int:
        return self.extra_index[name]


def _low_features(params: np.ndarray) -> np.ndarray:
    px, py, size, theta, hue, sat, val, bg, lsf = params.T
    return np.stack(
        [
            px,
            py,
            size,
            np.cos(2 * theta),
            np.sin(2 * theta),
            sat * np.cos(2 * np.pi * hue),
            sat * np.sin(2 * np.pi * hue),
            val,
            bg,
            lsf,
        ],
        axis=1,
    )


def _assign_categories(
    cfg: SimulationConfig, cats: Categories, roles: ImageryRoles
) -> tuple[np.ndarray, np.ndarray]:
    """Category and attributes per universe image; the imagery roles are forced to fit."""
    rng = stream(cfg.seed, "universe-categories")
    n = cfg.universe_size
    category = rng.choice(cats.universe, size=n).astype(np.int16)
    attrs = np.zeros((n, 2), dtype=bool)
    for a, attr in enumerate(ATTRIBUTES):
        rates = cfg.attribute_rates[attr]
        p = np.array([rates.get(cats.names[c], rates.get("*", 0.0)) for c in category])
        attrs[:, a] = rng.random(n) < p
    zebra, banana = cats.index("zebra"), cats.index("banana")
    mammals = [c for c in cats.members("mammal") if c != zebra]
    fruit = [c for c in cats.members("fruit") if c != banana]
    not_zebra = [c for c in cats.universe if c != zebra]
    not_banana = [c for c in cats.universe if c != banana]
    # (category choices, stripes, yellow) per conceptual target's exemplar pool
    forcing = {
        "Z": ([zebra], True, False),
        "M": (mammals, False, False),
        "N": ([banana], False, True),
        "F": (fruit, False, False),
        "S": (not_zebra, True, False),
        "Y": (not_banana, False, True),
    }
    for code, (choices, stripes, yellow) in forcing.items():
        for i in roles.concept_pools[code]:
            category[i] = rng.choice(choices)
            attrs[i] = (stripes, yellow)
    return category, attrs


def _draw_params(
    cfg: SimulationConfig,
    cats: Categories,
    category: np.ndarray,
    attrs: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    n = category.shape[0]
    psd = cfg.position_sd
    px = np.clip(rng.normal(0, psd, n), -2.5 * psd, 2.5 * psd)
    py = np.clip(rng.normal(0, psd, n), -2.5 * psd, 2.5 * psd)
    size = rng.uniform(*cfg.size_range, n)
    theta = rng.uniform(0, np.pi, n)
    hue = (cats.base_hue[category] + rng.normal(0, cfg.category_hue_sd, n)) % 1.0
    sat = rng.uniform(*cfg.saturation_range, n)
    val = rng.uniform(*cfg.value_range, n)
    bg = rng.uniform(*cfg.background_range, n)
    lsf = rng.uniform(*cfg.log2_frequency_range, n)
    yellow = attrs[:, 1]
    # Yellow things look yellow: the attribute reaches the low-level latent through colour.
    hue = np.where(yellow, (cfg.yellow_hue + rng.normal(0, 0.015, n)) % 1.0, hue)
    sat = np.where(yellow, np.maximum(sat, 0.75), sat)
    val = np.where(yellow, np.maximum(val, 0.8), val)
    return np.stack([px, py, size, theta, hue, sat, val, bg, lsf], axis=1)


def simple_target_params(cfg: SimulationConfig, angle_deg: float, size: float) -> np.ndarray:
    mid_sf = float(np.mean(cfg.log2_frequency_range))
    return np.array([0.0, 0.0, size, np.deg2rad(angle_deg), 0.0, 0.0, 1.0, 0.5, mid_sf])


def distractor_specs(cfg: SimulationConfig) -> list[tuple[str, str, float, int]]:
    """(frame stem, shape, angle, length) of the simple-set attention distractors."""
    targets = {(shape, angle) for shape, angle in SIMPLE_ANGLES.values()}
    specs: list[tuple[str, str, float, int]] = []
    for length in (450, 300, 600):
        for angle in np.arange(0.0, 180.0, 15.0):
            for shape in ("bar", "cross"):
                a = float(angle % 90.0) if shape == "cross" else float(angle)
                if shape == "cross" and angle >= 90.0:
                    continue
                if length == 450 and (shape, a) in targets:
                    continue
                stem = f"{'bar' if shape == 'bar' else 'crs'}_{a:05.1f}deg_{length}L_43W"
                specs.append((stem, shape, a, length))
    if len(specs) < cfg.n_attention_distractors:
        raise ValueError("too many attention distractors requested for the simple set")
    return specs[: cfg.n_attention_distractors]


def build_bank(cfg: SimulationConfig, cats: Categories, roles: ImageryRoles) -> StimulusBank:
    rng = stream(cfg.seed, "semantic-space")
    d = cfg.sem_dim
    sup_means = rng.normal(0, cfg.superordinate_sd, (len(cats.superordinates), d))
    sup_of = np.array([cats.superordinates.index(s) for s in cats.superordinate])
    protos = sup_means[sup_of] + rng.normal(0, cfg.category_sd, (len(cats.names), d))
    q, _ = np.linalg.qr(rng.normal(size=(d, len(ATTRIBUTES))))
    attr_dirs = q.T * cfg.attribute_strength  # orthogonal, so stripes and yellow separate

    category, attrs = _assign_categories(cfg, cats, roles)
    n = category.shape[0]
    rng_u = stream(cfg.seed, "universe-latents")
    z_sem = protos[category] + rng_u.normal(0, cfg.exemplar_sd, (n, d)) + attrs @ attr_dirs
    params = _draw_params(cfg, cats, category, attrs, rng_u)
    feats = _low_features(params)
    low_mean, low_sd = feats.mean(axis=0), feats.std(axis=0) + 1e-9

    # Extra stimuli, in a fixed order.
    names: list[str] = []
    e_cat: list[int] = []
    e_attr: list[tuple[bool, bool]] = []
    e_params: list[np.ndarray] = []
    e_sem: list[np.ndarray] = []
    for code, (shape, angle) in SIMPLE_ANGLES.items():
        names.append(code)
        e_cat.append(cats.index(shape))
        e_attr.append((False, False))
        e_params.append(simple_target_params(cfg, angle, SIMPLE_SIZE))
        e_sem.append(protos[cats.index(shape)])
    rng_t = stream(cfg.seed, "artwork")
    # T is an artwork: a painting if the category list has one.
    painting = (cats.index("painting") if "painting" in cats.names
                else int(rng_t.choice(cats.universe)))
    names.append(ARTWORK_CODE)
    e_cat.append(painting)
    e_attr.append((False, False))
    e_params.append(_draw_params(cfg, cats, np.array([painting]), np.zeros((1, 2), bool), rng_t)[0])
    e_sem.append(protos[painting] + rng_t.normal(0, cfg.exemplar_sd, d))

    words = word_latents(cfg, cats, protos, attr_dirs, z_sem)
    members = concept_members(cats, category, attrs)
    word_low: dict[str, np.ndarray] = {}
    for code in CONCEPT_CODES:
        word = CONCEPT_WORDS[code]
        names.append(code)
        e_cat.append(cats.index(word) if word in cats.names else -1)
        e_attr.append((word == "stripes" or word == "zebra", word in ("yellow", "banana")))
        e_params.append(np.full(len(PARAM_NAMES), np.nan))
        e_sem.append(words[word])
        # A word's low-level content is what its exemplars look like on average.
        word_low[code] = ((feats[members[word]] - low_mean) / low_sd).mean(axis=0)

    for stem, shape, angle, length in distractor_specs(cfg):
        names.append(f"distractor:{stem}")
        e_cat.append(cats.index(shape))
        e_attr.append((False, False))
        e_params.append(simple_target_params(cfg, angle, SIMPLE_SIZE * length / 450))
        e_sem.append(protos[cats.index(shape)])

    x_params = np.array(e_params)
    x_low = (_low_features(np.nan_to_num(x_params)) - low_mean) / low_sd
    for j, name in enumerate(names):
        if name in word_low:
            x_low[j] = word_low[name]
    all_params = np.concatenate([params, x_params]).astype(np.float32)
    bank = StimulusBank(
        n_universe=n,
        category=np.concatenate([category, np.array(e_cat, dtype=np.int16)]),
        attributes=np.concatenate([attrs, np.array(e_attr, dtype=bool)]),
        params=all_params,
        z_sem=np.concatenate([z_sem, np.array(e_sem)]).astype(np.float32),
        z_low=np.concatenate([(feats - low_mean) / low_sd, x_low]).astype(np.float32),
        low_mean=low_mean.astype(np.float32),
        low_sd=low_sd.astype(np.float32),
        superordinate_means=sup_means.astype(np.float32),
        prototypes=protos.astype(np.float32),
        attribute_directions=attr_dirs.astype(np.float32),
        word_latents={k: v.astype(np.float32) for k, v in words.items()},
        extra_index={name: n + j for j, name in enumerate(names)},
    )
    bank.simple = np.isin(bank.category, cats.members(SHAPE_SUPERORDINATE))
    rng_p = stream(cfg.seed, "embedding-private")
    bank.z_private = rng_p.normal(0, 1, bank.z_sem.shape).astype(np.float32) \
        * np.float32(cfg.embed_private_sd)
    return bank


def word_latents(
    cfg: SimulationConfig,
    cats: Categories,
    protos: np.ndarray,
    attr_dirs: np.ndarray,
    z_sem: np.ndarray,
) -> dict[str, np.ndarray]:
    """Semantic latents of the concept words, in the images' latent space.

    A category word is its prototype plus its expected attributes; a superordinate word the
    mean of its members' words; an attribute word the population mean moved along the
    attribute's direction.
    """
    out: dict[str, np.ndarray] = {}
    for c in cats.universe:
        name = cats.names[c]
        expected = np.array(
            [cfg.attribute_rates[a].get(name, cfg.attribute_rates[a].get("*", 0.0))
             for a in ATTRIBUTES]
        )
        out[name] = protos[c] + expected @ attr_dirs
    for sup in ("mammal", "fruit"):
        out[sup] = np.mean([out[cats.names[c]] for c in cats.members(sup)], axis=0)
    centre = z_sem.mean(axis=0)
    for a, attr in enumerate(ATTRIBUTES):
        unit = attr_dirs[a] / np.linalg.norm(attr_dirs[a])
        out[attr] = centre + cfg.word_attribute_scale * unit
    return out


def concept_members(
    cats: Categories, category: np.ndarray, attrs: np.ndarray
) -> dict[str, np.ndarray]:
    return {
        "zebra": np.flatnonzero(category == cats.index("zebra")),
        "banana": np.flatnonzero(category == cats.index("banana")),
        "mammal": np.flatnonzero(np.isin(category, cats.members("mammal"))),
        "fruit": np.flatnonzero(np.isin(category, cats.members("fruit"))),
        "stripes": np.flatnonzero(attrs[:, 0]),
        "yellow": np.flatnonzero(attrs[:, 1]),
    }


COLOUR_NAMES = ((0.04, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"),
                (0.55, "cyan"), (0.72, "blue"), (0.83, "purple"), (0.95, "pink"), (1.01, "red"))


def caption(
    bank: StimulusBank, cats: Categories, row: int, size_range: tuple[float, float]
) -> str:
    """A short caption from category and attributes, e.g. 'a small red zebra, tilted left'."""
    p = bank.params[row]
    cat = int(bank.category[row])
    name = cats.names[cat] if cat >= 0 else "thing"
    if np.isnan(p).any():
        return name
    px, py, size, theta, hue, sat, val, _bg, _lsf = (float(v) for v in p)
    if sat < 0.25:
        colour = "white" if val > 0.8 else "grey"
    else:
        colour = next(label for bound, label in COLOUR_NAMES if hue < bound)
    deg = np.rad2deg(theta) % 180
    if name in ("bar", "cross"):
        return f"a {colour} {name} at {deg:.0f} degrees"
    span = cats.aspect[cat] < 0.8 or SHAPES[int(cats.shape[cat])] in ("rectangle", "triangle")
    lo, hi = size_range
    third = (hi - lo) / 3
    size_word = "small" if size < lo + third else "large" if size > hi - third else ""
    stripes = " striped" if bank.attributes[row, 0] else ""
    words = " ".join(w for w in ("a", size_word, colour + stripes, name) if w)
    parts = [words]
    if span:
        if deg < 20 or deg > 160:
            parts.append("lying flat")
        elif 70 < deg < 110:
            parts.append("upright")
        else:
            parts.append("tilted right" if deg < 90 else "tilted left")
    if abs(px) > 0.08 or abs(py) > 0.08:
        if abs(px) >= abs(py):
            parts.append("on the left" if px < 0 else "on the right")
        else:
            parts.append("near the top" if py < 0 else "near the bottom")
    return ", ".join(parts)
