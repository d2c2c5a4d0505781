"""Multi-FFDI-style data made from real colour photographs, with local manipulations.

Every image, real or fake, starts as a *base*: a random crop of one of a handful of
natural photographs shipped inside scikit-image, scikit-learn and matplotlib, after a
random rescale and flip, with mild sensor-like noise. Size, source, crop, rescale, flip,
noise level and final JPEG quality are all drawn from the image's own random stream
before anything depends on the label, so none of them carries it. A fake is its base with
ONE local edit inside a random blob-shaped region (5-30 % of the area), then saved as
JPEG exactly like a real.

Families (FAMILIES): seen in training (train, val, test)
  splice           region from another photo, feathered (sometimes hard) mask
  resample         region down-scaled (x0.35-0.7) and up-scaled back
  denoise          region smoothed (Gaussian, median or bilateral-like)
  colour_transfer  region's luma/chroma mean/std moved toward another photo's
and only in val and test (never in train), to measure generalisation:
  double_jpeg      region JPEG-compressed at q35-70 on a shifted 8x8 grid, pasted back
  inpaint          region re-synthesised from the same image (copy-move, or a
                   diffusion fill with borrowed texture)

Everything is a pure function of (seed, split, index): same arguments, same bytes,
whatever the number of worker processes.

Written layout (only `ffdi/` is given to the workflow; the truth stays outside it):
  <data_dir>/ffdi/phase1/trainset/<md5>.jpg   <data_dir>/ffdi/phase1/trainset_label.txt
  <data_dir>/ffdi/phase1/valset/<md5>.jpg     <data_dir>/ffdi/phase1/valset_label.txt
  <data_dir>/ffdi/phase2/testset1_seen/<md5>.jpg  <data_dir>/ffdi/phase2/testset1_seen_nolabel.txt
  <data_dir>/truth/test_labels.csv   img_name,target,method
  <data_dir>/truth/methods.csv       img_name,split,method   (all splits; "real" for reals)
  <data_dir>/params.json             what the data is a function of (reuse check)
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import io
import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

GENERATOR_VERSION = 1  # bump when the bytes produced for the same parameters change
REAL = "real"
SEEN = ("splice", "resample", "denoise", "colour_transfer")
UNSEEN = ("double_jpeg", "inpaint")  # val/test only
SIZE_RANGE = (256, 512)  # width and height, drawn independently, inclusive
SCALE_RANGE = (0.5, 1.0)  # rescale of the source before cropping
QUALITY_RANGE = (80, 95)  # final JPEG quality, inclusive
AREA_RANGE = (0.05, 0.30)  # edited fraction of the image
INSTALL_HINT = "scikit-image is missing: pip install -e '.[bench]'  (or: pip install scikit-image)"

# (package, path inside the installed package): natural colour photographs only
SOURCES = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/motorcycle_right.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


@dataclass(frozen=True)
class Split:
    key: str  # train | val | test (the `split` column of methods.csv)
    code: int  # part of every image's random key; never change (it would change the bytes)
    phase: str
    folder: str
    label_file: str  # what the workflow may read
    fake_ratio: float
    methods: tuple[str, ...]


SPLITS = (
    Split("train", 1, "phase1", "trainset", "trainset_label.txt", 0.8, SEEN),
    Split("val", 2, "phase1", "valset", "valset_label.txt", 0.6, SEEN + UNSEEN),
    Split("test", 3, "phase2", "testset1_seen", "testset1_seen_nolabel.txt", 0.6, SEEN + UNSEEN),
)


class MissingDependency(RuntimeError):
    pass


# --------------------------------------------------------------------------- sources


def source_paths() -> list[Path]:
    paths = []
    for package, rel in SOURCES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            if package == "skimage":
                raise MissingDependency(INSTALL_HINT)
            raise MissingDependency(f"{package} is missing: pip install -e .")
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise MissingDependency(f"source photo {path} not found (another {package} version?)")
        paths.append(path)
    return paths


def source_digests() -> dict[str, str]:
    """Short content hashes of the source photos: another package version means other data."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in source_paths()}


@cache
def _sources() -> tuple[Image.Image, ...]:
    # loaded once per process (workers fork after the parent has loaded them)
    out = []
    for path in source_paths():
        with Image.open(path) as im:
            out.append(im.convert("RGB"))
    return tuple(out)


# --------------------------------------------------------------------------- bases


@dataclass(frozen=True)
class BaseParams:
    source: int
    width: int
    height: int
    scale: float
    x0: float  # crop origin in the rescaled source
    y0: float
    flip: bool
    noise_luma: float  # sensor-like noise, shared by the three channels
    noise_chroma: float  # and per channel


def draw_base(rng: np.random.Generator, width: int, height: int, exclude: int | None = None) -> BaseParams:
    n = len(_sources())
    choices = [i for i in range(n) if i != exclude]
    source = int(choices[rng.integers(len(choices))])
    sw, sh = _sources()[source].size
    # the crop must fit: small sources (chelsea is 451x300) are up-scaled as needed
    fit = max(width / sw, height / sh)
    lo, hi = max(SCALE_RANGE[0], fit), max(SCALE_RANGE[1], fit)
    scale = float(rng.uniform(lo, hi))
    x0 = float(rng.uniform(0, max(0.0, sw * scale - width)))
    y0 = float(rng.uniform(0, max(0.0, sh * scale - height)))
    return BaseParams(source, width, height, scale, x0, y0, bool(rng.random() < 0.5),
                      float(rng.uniform(0.8, 3.0)), float(rng.uniform(0.3, 1.5)))


def make_base(p: BaseParams, rng: np.random.Generator) -> np.ndarray:
    """float32 HxWx3 in [0, 255]: crop + rescale in one Lanczos resampling, flip, noise."""
    box = (p.x0 / p.scale, p.y0 / p.scale, (p.x0 + p.width) / p.scale, (p.y0 + p.height) / p.scale)
    im = _sources()[p.source].resize((p.width, p.height), Image.Resampling.LANCZOS, box=box)
    if p.flip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = np.asarray(im, np.float32)
    # the shipped photos are clean (downscaled, compressed); a little noise makes them
    # camera-like, so that smoothing or pasting a region leaves a local noise trace
    luma = rng.standard_normal((p.height, p.width, 1), dtype=np.float32) * p.noise_luma
    chroma = rng.standard_normal((p.height, p.width, 3), dtype=np.float32) * p.noise_chroma
    return np.clip(img + luma + chroma, 0, 255)


# --------------------------------------------------------------------------- masks


def _smooth_field(rng, h, w, cell):
    """Unit-variance smooth random field: coarse noise, cubic up-sampling."""
    gh, gw = h // cell + 4, w // cell + 4
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    field = ndimage.zoom(coarse, (h / (gh - 3), w / (gw - 3)), order=3)[:h, :w]
    return (field - field.mean()) / (field.std() + 1e-6)


def draw_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Boolean blob: a rotated elliptical bump warped by smooth noise, thresholded to the drawn area.

    The field is built at quarter resolution (it is smooth) and up-sampled: 10x faster.
    """
    area = rng.uniform(*AREA_RANGE)
    cy, cx = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)
    aspect = np.exp(rng.uniform(-0.6, 0.6))
    theta = rng.uniform(0, np.pi)
    rough = rng.uniform(0.04, 0.12)
    sh, sw = h // 4, w // 4
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    yy, xx = (yy + 0.5) * 4 - cy * h, (xx + 0.5) * 4 - cx * w
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    d = np.sqrt((u / aspect) ** 2 + (v * aspect) ** 2) / np.sqrt(h * w)
    field = -d + rough * (_smooth_field(rng, sh, sw, 12) + 0.5 * _smooth_field(rng, sh, sw, 4))
    field = np.asarray(Image.fromarray(field.astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC))
    k = int((1 - area) * field.size)
    return field >= np.partition(field.ravel(), k)[k]


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    m = mask.astype(np.float32)
    return ndimage.gaussian_filter(m, sigma) if sigma > 0 else m


def blend(base: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return base + alpha[..., None] * (edited - base)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
            slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)))


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def _ycc(img):
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, 0.564 * (b - y), 0.713 * (r - y)], axis=-1)


def _rgb(ycc):
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    r = y + cr / 0.713
    b = y + cb / 0.564
    return np.stack([r, (y - 0.299 * r - 0.114 * b) / 0.587, b], axis=-1)


def _shifted(img: np.ndarray, rng, lo=0.2, hi=0.5) -> np.ndarray:
    """The same image displaced by a random offset (reflecting at the borders)."""
    h, w = img.shape[:2]
    oy = int(rng.uniform(lo, hi) * h) * (1 if rng.random() < 0.5 else -1)
    ox = int(rng.uniform(lo, hi) * w) * (1 if rng.random() < 0.5 else -1)
    pad = np.pad(img, ((h, h), (w, w), (0, 0)), mode="symmetric")
    return pad[h + oy: 2 * h + oy, w + ox: 2 * w + ox]


# --------------------------------------------------------------------------- families
# Each takes (rng, base float HxWx3, mask bool HxW, index of the base's source photo) and
# returns the edited float image.


def splice(rng, base, mask, source):
    h, w = mask.shape
    donor = make_base(draw_base(rng, w, h, exclude=source), rng)
    if rng.random() < 0.5:  # a careful forger shifts the pasted brightness toward the target
        gap = base[mask].mean(axis=0) - donor[mask].mean(axis=0)
        donor = donor + rng.uniform(0.3, 0.8) * gap
    alpha = mask.astype(np.float32) if rng.random() < 0.3 else feather(mask, rng.uniform(1.0, 5.0))
    return blend(base, donor, alpha)


def resample(rng, base, mask, source):
    h, w = mask.shape
    f = rng.uniform(0.35, 0.7)
    down = [Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
            Image.Resampling.LANCZOS][rng.integers(4)]
    up = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.NEAREST][
        rng.choice(3, p=[0.4, 0.4, 0.2])]
    small = _to_pil(base).resize((max(8, round(w * f)), max(8, round(h * f))), down)
    edited = np.asarray(small.resize((w, h), up), np.float32)
    alpha = mask.astype(np.float32) if rng.random() < 0.3 else feather(mask, rng.uniform(0.5, 3.0))
    return blend(base, edited, alpha)


def _bilateral(img, rng):
    """5x5 bilateral filter: smooths noise and texture, keeps strong edges."""
    ss, sr = rng.uniform(1.2, 2.5), rng.uniform(12.0, 30.0)
    pad = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    num = np.zeros_like(img)
    den = np.zeros(img.shape[:2] + (1,), np.float32)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            nb = pad[2 + dy: 2 + dy + h, 2 + dx: 2 + dx + w]
            diff = ((nb - img) ** 2).mean(axis=-1, keepdims=True)
            wgt = np.exp(-(dy * dy + dx * dx) / (2 * ss * ss) - diff / (2 * sr * sr)).astype(np.float32)
            num += wgt * nb
            den += wgt
    return num / den


def denoise(rng, base, mask, source):
    box = _bbox(mask, 12)  # only the region's neighbourhood is filtered: faster, same result
    crop = base[box]
    kind = rng.integers(3)
    if kind == 0:
        s = rng.uniform(0.8, 1.8)
        out = ndimage.gaussian_filter(crop, (s, s, 0))
    elif kind == 1:
        k = int(rng.choice([3, 5]))
        out = ndimage.median_filter(crop, size=(k, k, 1))
    else:
        out = _bilateral(crop, rng)
    edited = base.copy()
    edited[box] = out
    return blend(base, edited, feather(mask, rng.uniform(1.5, 5.0)))


def colour_transfer(rng, base, mask, source):
    h, w = mask.shape
    donor = make_base(draw_base(rng, w, h, exclude=source), rng)
    x, t_img = _ycc(base), _ycc(donor)
    mu_r, sd_r = x[mask].mean(axis=0), x[mask].std(axis=0) + 1e-3
    mu_t, sd_t = t_img[mask].mean(axis=0), t_img[mask].std(axis=0) + 1e-3
    t = rng.uniform(0.35, 0.75)
    # partial move, bounded so that the region stays plausible (no recoloured patch)
    ratio = np.clip(1 + t * (sd_t / sd_r - 1), 0.6, 1.6)
    shift = np.clip(t * (mu_t - mu_r), [-40, -25, -25], [40, 25, 25])
    moved = (x - mu_r) * ratio + mu_r + shift
    return blend(base, _rgb(moved), feather(mask, rng.uniform(3.0, 10.0)))


def double_jpeg(rng, base, mask, source):
    q = int(rng.integers(35, 71))
    dy, dx = (int(v) for v in rng.integers(0, 8, 2))
    buf = io.BytesIO()
    # crop by (dy, dx): its 8x8 grid is shifted against the final save's grid
    _to_pil(base[dy:, dx:]).save(buf, format="JPEG", quality=q)
    edited = base.copy()
    edited[dy:, dx:] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)
    alpha = mask.astype(np.float32) if rng.random() < 0.5 else feather(mask, rng.uniform(0.5, 1.5))
    return blend(base, edited, alpha)


def _diffusion_fill(base, mask):
    """Smooth fill of the region from its surroundings (normalised convolution, coarse to fine,
    at quarter resolution), up-sampled back."""
    h, w = mask.shape
    sw, sh = max(8, w // 4), max(8, h // 4)
    small = np.asarray(_to_pil(base).resize((sw, sh), Image.Resampling.BOX), np.float32)
    hole = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((sw, sh), Image.Resampling.BOX))
    known = (hole == 0).astype(np.float32)
    est = None
    for s in (16, 8, 4, 2, 1):
        wgt = ndimage.gaussian_filter(known, s)
        cur = ndimage.gaussian_filter(small * known[..., None], (s, s, 0)) / np.maximum(wgt, 1e-6)[..., None]
        a = np.clip(wgt / 0.3, 0, 1)[..., None]
        est = cur if est is None else est * (1 - a) + cur * a
    fill = np.where(known[..., None] > 0, small, est).astype(np.float32)
    # PIL resizes float images one channel ("F" mode) at a time
    return np.stack([np.asarray(Image.fromarray(fill[..., c]).resize((w, h), Image.Resampling.BICUBIC))
                     for c in range(3)], axis=-1)


def inpaint(rng, base, mask, source):
    src = _shifted(base, rng)
    # diffusion fill smears large holes (as classic inpainting does): only for small ones
    if mask.mean() > 0.15 or rng.random() < 0.5:
        # copy-move: a patch from elsewhere in the same image, brightness nudged to fit
        gap = base[mask].mean(axis=0) - src[mask].mean(axis=0)
        edited = src + rng.uniform(0.3, 0.8) * gap
        sigma = rng.uniform(2.0, 6.0)
    else:
        # diffusion fill for the low frequencies, texture (and noise) borrowed from elsewhere
        detail = src - ndimage.gaussian_filter(src, (2.0, 2.0, 0))
        edited = _diffusion_fill(base, mask) + rng.uniform(0.6, 1.0) * detail
        sigma = rng.uniform(2.0, 5.0)
    return blend(base, edited, feather(mask, sigma))


FAMILIES = {
    "splice": splice,
    "resample": resample,
    "denoise": denoise,
    "colour_transfer": colour_transfer,
    "double_jpeg": double_jpeg,
    "inpaint": inpaint,
}

# --------------------------------------------------------------------------- one image


def render(seed: int, split_code: int, index: int, method: str) -> bytes:
    """JPEG bytes of one image; `method` is 'real' or a key of FAMILIES."""
    # fixed-length keys (SeedSequence pads with zeros); stream 1 = base, stream 2 = edit
    rng = np.random.default_rng([seed, split_code, 1, index])
    width, height = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
    quality = int(rng.integers(QUALITY_RANGE[0], QUALITY_RANGE[1] + 1))
    params = draw_base(rng, width, height)
    img = make_base(params, rng)
    if method != REAL:
        edit_rng = np.random.default_rng([seed, split_code, 2, index])
        mask = draw_mask(edit_rng, height, width)
        img = FAMILIES[method](edit_rng, img, mask, params.source)
    buf = io.BytesIO()
    _to_pil(img).save(buf, format="JPEG", quality=quality)  # the same save for reals and fakes
    return buf.getvalue()


def plan_split(seed: int, split: Split, n: int) -> list[str]:
    """Method per index: exact fake ratio, families balanced, order shuffled."""
    n_fake = int(round(n * split.fake_ratio))
    plan = [split.methods[i % len(split.methods)] for i in range(n_fake)] + [REAL] * (n - n_fake)
    order = np.random.default_rng([seed, split.code, 0, 0]).permutation(n)
    return [plan[i] for i in order]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _task(args) -> tuple[str, int, str, str]:
    seed, split_key, code, index, method, folder = args
    blob = render(seed, code, index, method)
    name = hashlib.md5(blob).hexdigest() + ".jpg"
    _write_atomic(Path(folder) / name, blob)
    return split_key, index, name, method


def _write_csv(path: Path, header: str, rows) -> None:
    _write_atomic(path, (header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)).encode())


# --------------------------------------------------------------------------- the data set


def dataset_params(*, seed: int, n_train: int, n_val: int, n_test: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n": {"train": n_train, "val": n_val, "test": n_test},
        "families_seen": list(SEEN),
        "families_unseen": list(UNSEEN),
        "sources": source_digests(),
    }


def data_paths(data_dir: Path) -> dict[str, Path]:
    return {
        "root": data_dir / "ffdi",
        "truth": data_dir / "truth",
        "test_labels": data_dir / "truth" / "test_labels.csv",
        "methods": data_dir / "truth" / "methods.csv",
        "params": data_dir / "params.json",
    }


def _read_params(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_dataset(data_dir: Path, *, seed: int, n_train: int, n_val: int, n_test: int,
                   workers: int = 2) -> bool:
    """Generate the data set under data_dir unless one with the same params is there.

    Returns True if it was generated, False if reused. The tree is built in a temporary
    sibling and renamed into place; params.json is written last, so a killed run is
    never mistaken for finished data.
    """
    data_dir = Path(data_dir)
    for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 10:
            raise ValueError(f"{key}: expected >= 10, got {n}")
    params = dataset_params(seed=seed, n_train=n_train, n_val=n_val, n_test=n_test)
    if _read_params(data_dir) == params:
        return False
    if data_dir.exists() and any(data_dir.iterdir()) and _read_params(data_dir) is None:
        raise RuntimeError(f"{data_dir} is a non-empty folder without params.json; refusing to "
                           "replace it (choose another --data-dir or remove it)")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.parent.glob(f".tmp-{data_dir.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{data_dir.name}-", dir=data_dir.parent))
    try:
        _generate(tmp, seed, {"train": n_train, "val": n_val, "test": n_test}, workers)
        _write_atomic(tmp / "params.json", (json.dumps(params, indent=2, sort_keys=True) + "\n").encode())
        os.chmod(tmp, 0o755)
        if data_dir.exists():
            shutil.rmtree(data_dir)
        os.replace(tmp, data_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def _generate(out: Path, seed: int, counts: dict, workers: int) -> None:
    paths = data_paths(out)
    tasks = []
    for split in SPLITS:
        folder = paths["root"] / split.phase / split.folder
        folder.mkdir(parents=True)
        for index, method in enumerate(plan_split(seed, split, counts[split.key])):
            tasks.append((seed, split.key, split.code, index, method, str(folder)))
    _sources()  # load before forking: the workers share them
    if workers > 1:
        ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() \
            else multiprocessing.get_context()
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            results = list(pool.map(_task, tasks, chunksize=16))
    else:
        results = [_task(t) for t in tasks]
    rows = {s.key: [] for s in SPLITS}
    for split_key, _index, name, method in results:
        rows[split_key].append((name, method))
    for split in SPLITS:
        entries = sorted(rows[split.key])  # by name: row order carries nothing
        if len({n for n, _ in entries}) != len(entries):
            raise RuntimeError(f"{split.key}: duplicate image names")
        label_path = paths["root"] / split.phase / split.label_file
        if split.key == "test":  # ships without labels, like the real phase-2 set
            _write_csv(label_path, "img_name", [(n,) for n, _ in entries])
        else:
            _write_csv(label_path, "img_name,target", [(n, int(m != REAL)) for n, m in entries])
    paths["truth"].mkdir()
    _write_csv(paths["test_labels"], "img_name,target,method",
               [(n, int(m != REAL), m) for n, m in sorted(rows["test"])])
    _write_csv(paths["methods"], "img_name,split,method",
               [(n, s.key, m) for s in SPLITS for n, m in sorted(rows[s.key])])


def summarise(data_dir: Path) -> dict:
    """Counts per split and family, from the truth files."""
    import pandas as pd

    methods = pd.read_csv(data_paths(Path(data_dir))["methods"])
    out = {}
    for split in SPLITS:
        part = methods[methods["split"] == split.key]
        out[split.key] = {
            "n": int(len(part)),
            "n_fake": int((part["method"] != REAL).sum()),
            "by_method": {str(k): int(v) for k, v in part["method"].value_counts().sort_index().items()},
        }
    return out


def image_stats(path: Path) -> dict:
    """Simple global statistics a shortcut-taking detector could use."""
    with Image.open(path) as im:
        qtable = im.quantization.get(0, [])
        rgb = np.asarray(im.convert("RGB"), np.float32)
    grey = rgb.mean(axis=-1)
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    h, w = grey.shape
    size = path.stat().st_size
    return {
        "file_bytes": size,
        "bytes_per_pixel": size / (h * w),
        "jpeg_quality": -float(np.sum(qtable)),  # larger quantisers = lower quality
        "pixels": h * w,
        "aspect": w / h,
        "mean_brightness": float(grey.mean()),
        "saturation": float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean()),
        "hf_energy": float(np.abs(lap).mean()),
    }
