"""Procedurally generated demo data laid out exactly like the Multi-FFDI competition set.

Every image is a synthetic "photo" of a face (head, hair, eyes, brows, nose, mouth,
shoulders, background) with random lighting, texture, optical blur and sensor noise.
Fakes are the same kind of photo with a forgery trace added at the scale of the face:

- ``self_blend``: a colour/sharpness-altered, slightly shifted copy of the face blended
  back with a soft elliptical mask (after Shiohara & Yamasaki, CVPR 2022).
- ``upsample``: the face region re-generated at 1/2, 1/4 or 1/8 resolution and up-sampled
  by nearest neighbour or stacked 2x transposed convolutions (zero insertion + fixed uneven
  kernel), which leaves periodic (checkerboard) spectral peaks and a noise-free face.
- ``noise_mismatch``: the face smoothed and re-noised at a clearly different level.
- ``face_swap`` (held out, val/test only): the inner face of another identity, shot with
  another camera, pasted with a nearly hard seam and only partial colour correction.

Image size and JPEG quality are drawn from each image's own random stream *before*
anything that depends on the label, so they carry no information about it.
Everything is a pure function of ``(seed, split, index)``: the same arguments give the
same bytes, whatever the number of worker processes.

Modules: `scene` (the portrait), `camera` (blur and sensor noise), `forgeries` (the traces),
`dataset` (one image from its key, the splits, writing the data set).
"""
from .camera import Camera
from .dataset import (
    HELD_OUT_METHODS,
    JPEG_QUALITY_RANGE,
    REAL,
    SPLITS,
    TRAIN_METHODS,
    SplitSpec,
    render_image,
    write_demo_dataset,
)
from .forgeries import FORGERIES
from .scene import FaceGeometry

__all__ = [
    "Camera", "FaceGeometry", "FORGERIES", "HELD_OUT_METHODS", "JPEG_QUALITY_RANGE", "REAL", "SPLITS",
    "SplitSpec", "TRAIN_METHODS", "render_image", "write_demo_dataset",
]
