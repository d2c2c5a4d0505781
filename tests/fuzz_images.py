"""Seeded fuzzing of image files: valid JPEG and PNG files mutated in the ways real data breaks.

Used by tests/test_fuzz.py; also runnable by hand for a longer run:
    python tests/fuzz_images.py write OUT_DIR --cases 20000 --seed 7
    python tests/fuzz_images.py decode OUT_DIR --report report.json   # memory-capped, timed per file
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import struct
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

MUTATIONS = ("flip_bytes", "truncate", "jpeg_size", "jpeg_components", "jpeg_huffman", "png_size",
             "png_chunk_length", "wrong_magic", "zero_block", "duplicate_block")


def base_images(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Valid files of the kinds data sets hold: baseline and progressive JPEG, grey JPEG,
    RGB, RGBA, palette and 16-bit PNG."""
    h, w = 40, 56
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)
    rgb = np.clip(rgb.astype(int) + rng.integers(0, 40, rgb.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    out = []
    for name, kwargs, image, fmt in [
        ("baseline.jpg", {"quality": 90}, im, "JPEG"),
        ("progressive.jpg", {"quality": 80, "progressive": True}, im, "JPEG"),
        ("subsampled.jpg", {"quality": 70, "subsampling": 2}, im, "JPEG"),
        ("grey.jpg", {"quality": 85}, im.convert("L"), "JPEG"),
        ("rgb.png", {}, im, "PNG"),
        ("rgba.png", {}, im.convert("RGBA"), "PNG"),
        ("palette.png", {}, im.convert("P"), "PNG"),
        ("deep.png", {}, Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
    ]:
        buf = io.BytesIO()
        image.save(buf, fmt, **kwargs)
        out.append((name, buf.getvalue()))
    return out


def _marker(data: bytes, code: int) -> int:
    """Offset of the first JPEG marker 0xFF<code>, or -1."""
    return data.find(bytes([0xFF, code]))


def _set_png_ihdr(data: bytearray, width: int, height: int, fix_crc: bool) -> None:
    # PNG: 8-byte signature, then the IHDR chunk: length(4) type(4) width(4) height(4) ...
    data[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One seeded mutation of a valid file (the kind may not apply: then bytes are flipped)."""
    b = bytearray(data)
    n = len(b)
    if kind == "truncate":
        return bytes(b[: int(rng.integers(0, n))])
    if kind == "jpeg_size" and (sof := max(_marker(data, 0xC0), _marker(data, 0xC2))) >= 0:
        # SOF: FF Cx, length(2), precision(1), height(2), width(2), components(1)
        value = int(rng.choice([0, 1, 65535, int(rng.integers(0, 65536))]))
        at = sof + 5 + 2 * int(rng.integers(0, 2))
        b[at:at + 2] = struct.pack(">H", value)
        return bytes(b)
    if kind == "jpeg_components" and (sof := max(_marker(data, 0xC0), _marker(data, 0xC2))) >= 0:
        b[sof + 9] = int(rng.choice([0, 2, 4, 255]))
        return bytes(b)
    if kind == "jpeg_huffman" and (dht := _marker(data, 0xC4)) >= 0:
        for _ in range(int(rng.integers(1, 6))):  # code counts and symbols of a Huffman table
            b[dht + 5 + int(rng.integers(0, 40))] = int(rng.integers(0, 256))
        return bytes(b)
    if kind == "png_size" and data.startswith(b"\x89PNG"):
        w = int(rng.choice([0, 1, 2**31 - 1, int(rng.integers(1, 100_000))]))
        h = int(rng.choice([0, 1, 2**31 - 1, int(rng.integers(1, 100_000))]))
        _set_png_ihdr(b, w, h, fix_crc=bool(rng.integers(0, 2)))
        return bytes(b)
    if kind == "png_chunk_length" and data.startswith(b"\x89PNG"):
        idat = data.find(b"IDAT")
        b[idat - 4:idat] = struct.pack(">I", int(rng.choice([0, 2**31 - 1, int(rng.integers(0, 1 << 32))])))
        return bytes(b)
    if kind == "wrong_magic":
        b[: 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        return bytes(b)
    if kind == "zero_block":
        start = int(rng.integers(0, n))
        end = min(n, start + int(rng.integers(1, 200)))
        b[start:end] = bytes(end - start)
        return bytes(b)
    if kind == "duplicate_block":
        start = int(rng.integers(0, n))
        return bytes(b[:start] + b[start:start + int(rng.integers(1, 300))] + b[start:])
    for _ in range(int(rng.integers(1, 12))):  # flip_bytes, or a kind that does not apply
        b[int(rng.integers(0, n))] ^= int(rng.integers(1, 256))
    return bytes(b)


def write_cases(out_dir: Path, *, cases: int, seed: int) -> list[dict]:
    """Write `cases` mutated files (md5-like names, the real layout's) and return what each is."""
    rng = np.random.default_rng(seed)
    bases = base_images(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(cases):
        base_name, data = bases[int(rng.integers(0, len(bases)))]
        kind = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
        suffix = Path(base_name).suffix
        name = f"{i:032x}{suffix}"
        (out_dir / name).write_bytes(mutate(data, kind, rng))
        written.append({"img_name": name, "base": base_name, "mutation": kind})
    return written


def decode_all(folder: Path, *, size: int, mem_limit_mb: int) -> dict:
    """Decode every file of `folder` with the library, under an address-space cap.

    Each file ends, in each resize mode, as ok (with the array's shape and dtype), a clear
    ImageReadError, or a crash (any other exception, with its traceback): the test wants no
    crash. `squash` takes the JPEG draft (DCT-scaled) decode path, `native_crop` the full decode.
    """
    from deepfake_workflow.imageio import ImageReadError, load_rgb_and_size

    resource.setrlimit(resource.RLIMIT_AS, (mem_limit_mb << 20, mem_limit_mb << 20))
    results = []
    for path, resize in ((p, r) for p in sorted(folder.iterdir()) for r in ("squash", "native_crop")):
        started = time.perf_counter()
        entry = {"img_name": path.name, "resize": resize}
        try:
            array, _ = load_rgb_and_size(path, size, resize)
            entry.update(outcome="ok", shape=list(array.shape), dtype=str(array.dtype))
        except ImageReadError as exc:
            entry.update(outcome="error", reason=exc.reason)
        except BaseException:  # noqa: BLE001 - the point is to catch what should never happen
            entry.update(outcome="crash", traceback=traceback.format_exc())
        entry["seconds"] = time.perf_counter() - started
        results.append(entry)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"results": results, "peak_rss_mb": peak_mb}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write")
    write.add_argument("out_dir", type=Path)
    write.add_argument("--cases", type=int, default=1000)
    write.add_argument("--seed", type=int, default=0)
    decode = sub.add_parser("decode")
    decode.add_argument("folder", type=Path)
    decode.add_argument("--size", type=int, default=32)
    decode.add_argument("--mem-limit-mb", type=int, default=2048)
    decode.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "write":
        print(f"wrote {len(write_cases(args.out_dir, cases=args.cases, seed=args.seed))} files to {args.out_dir}")
    else:
        report = decode_all(args.folder, size=args.size, mem_limit_mb=args.mem_limit_mb)
        args.report.write_text(json.dumps(report), encoding="utf-8")
        counts = {k: sum(r["outcome"] == k for r in report["results"]) for k in ("ok", "error", "crash")}
        print(f"{len(report['results'])} files: {counts}, peak RSS {report['peak_rss_mb']:.0f} MB")
