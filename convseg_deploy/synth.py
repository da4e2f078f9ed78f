"""Synthetic colonoscopy frames with exact polyp masks, for tests and demos without Kvasir-SEG.

Each frame is textured pinkish mucosa with folds, vessels, a dark lumen, endoscope vignetting
and specular glints, plus zero to three dome-shaded polyps. The mask is computed first and the
image is shaded from the same geometry, so mask and image agree pixel for pixel. Frame ``i`` of
a dataset depends only on ``(seed, i)``, so a larger dataset starts with the smaller one.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from convseg_deploy.errors import ConvSegError
from convseg_deploy.fsutil import atomic_dir, ensure_dir

JPEG_QUALITY = 95
_WHITE = np.array([1.0, 0.98, 0.97], np.float32)  # glints are slightly bluish-white


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, cached because every frame of a size needs them."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _white(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance white noise; uniform because it is several times faster than
    Gaussian to draw and looks the same once blurred or added at low amplitude."""
    return (rng.random(shape, dtype=np.float32) - np.float32(0.5)) * np.float32(12**0.5)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise of roughly unit amplitude: a coarse random grid upsampled bicubically
    (to at most 64 pixels, then bilinearly, which is as smooth at these scales and cheaper)."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    mid = cv2.resize(coarse, (min(size, 64),) * 2, interpolation=cv2.INTER_CUBIC)
    return mid if size <= 64 else cv2.resize(mid, (size, size), interpolation=cv2.INTER_LINEAR)


def _mucosa(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float mucosa, channels first (3xHxW, broadcasting over the leading axis is fast):
    colour, texture, a dark lumen, folds around it, and vessels."""
    yy, xx = _grid(size)
    base = np.array([rng.uniform(0.74, 0.92), rng.uniform(0.30, 0.46), rng.uniform(0.26, 0.40)], np.float32)
    shade = 1 + 0.12 * _noise(rng, size, 4) + 0.05 * _noise(rng, size, max(4, size // 12))
    shade += 0.035 * cv2.GaussianBlur(_white(rng, (size, size)), (0, 0), 0.8)
    # Folds are rings around the lumen (the dark far end of the colon): curved dark bands
    # that are not polyps. They are smooth, so draw them at low resolution and upsample.
    low = min(size, 64)
    lum = [float(v) for v in rng.uniform(-0.2, 1.2, 2)]
    if rng.random() < 0.6:
        sigma2 = 2 * (rng.uniform(0.08, 0.18) * size) ** 2
        hole = np.exp(-((xx - lum[0] * size) ** 2 + (yy - lum[1] * size) ** 2) / sigma2)
        shade *= 1 - rng.uniform(0.4, 0.8) * hole
    folds = np.zeros((low, low), np.float32)
    thick = max(1, round(low * rng.uniform(0.03, 0.07)))
    dark, lit = -rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.25)
    for _ in range(int(rng.integers(1, 5))):
        radius = rng.uniform(0.2, 0.9) * low
        axes = (int(radius), int(radius * rng.uniform(0.5, 1.0)))
        start, span, angle = rng.uniform(0, 360), rng.uniform(70, 220), rng.uniform(0, 180)
        centre = (int(lum[0] * low), int(lum[1] * low))
        # A lit ridge just outside each shadow band makes the fold look raised.
        outer = (axes[0] + thick + 1, axes[1] + thick + 1)
        cv2.ellipse(folds, centre, outer, angle, start, start + span, lit, thick, cv2.LINE_AA)
        cv2.ellipse(folds, centre, axes, angle, start, start + span, dark, thick, cv2.LINE_AA)
    folds = cv2.GaussianBlur(folds, (0, 0), low * 0.02 + 0.5)
    shade *= 1 + cv2.resize(folds, (size, size), interpolation=cv2.INTER_LINEAR)
    rgb = shade[None] * base[:, None, None]
    rgb[1:] *= 1 + 0.08 * _noise(rng, size, 3)  # slow hue drift: some areas redder, some paler
    vessels = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(0, 4))):
        heading = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.35, 16).cumsum()  # gently winding
        steps = np.stack([np.cos(heading), np.sin(heading)], 1).cumsum(0) * size * 0.03
        steps += rng.uniform(0, size, 2)
        cv2.polylines(vessels, [np.round(steps).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA)
    vessels = cv2.GaussianBlur(vessels, (0, 0), 0.6) * rng.uniform(0.3, 0.8)
    rgb *= 1 - vessels[None] * np.array([0.1, 0.35, 0.3], np.float32)[:, None, None]
    return rgb


def _add_polyp(rng: np.random.Generator, rgb: np.ndarray, bare: np.ndarray, mask: np.ndarray,
               glints: np.ndarray) -> None:
    """Draw one irregular, dome-shaded polyp into ``rgb`` and its exact footprint into ``mask``.

    ``bare`` is the mucosa without polyps: its detail shows through, but earlier polyps must not.
    """
    size = mask.shape[0]
    radius = size * (0.05 + 0.20 * rng.random() ** 0.8)
    cx, cy = (float(v) * size for v in rng.uniform(0.15, 0.85, 2))
    amps = rng.uniform(0, 0.2, 4) / np.arange(2, 6)  # sum < 0.3: the outline never self-overlaps
    phases = rng.uniform(0, 2 * np.pi, 4)
    squash, tilt = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
    half = int(np.ceil(radius * (1 + amps.sum()))) + 2
    x0, x1 = max(0, int(cx) - half), min(size, int(cx) + half + 1)
    y0, y1 = max(0, int(cy) - half), min(size, int(cy) + half + 1)
    yy, xx = _grid(size)
    dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
    # Local frame: rotate, then stretch one axis, so squash < 1 flattens the blob.
    lx = dx * np.cos(tilt) + dy * np.sin(tilt)
    ly = (dy * np.cos(tilt) - dx * np.sin(tilt)) / squash
    dist = np.sqrt(lx * lx + ly * ly) + 1e-6
    # rho(theta) = radius * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..5, with cos/sin(k theta)
    # from the angle-addition recurrence: no per-pixel trigonometry.
    c1, s1 = lx / dist, ly / dist
    ck, sk = c1 * c1 - s1 * s1, 2 * c1 * s1
    rho = np.ones_like(dist)
    for amp, phase in zip(amps, phases):
        rho += float(amp * np.cos(phase)) * ck - float(amp * np.sin(phase)) * sk
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    rho *= radius
    inside = dist <= rho
    mask[y0:y1, x0:x1][inside] = 255
    # Coverage from the (approximate) signed distance in pixels: >= 0.5 exactly where inside.
    alpha = np.clip((rho - dist) * squash + 0.5, 0, 1)
    # Dome height (exponent: flat-topped to peaked) with lobular bumps that the light picks out.
    u2 = np.minimum((dist / rho) ** 2, 1)
    cells = max(2, round(2 * half / (radius / 2.5)))
    bumps = cv2.resize(rng.standard_normal((cells, cells), dtype=np.float32), (2 * half + 1,) * 2,
                       interpolation=cv2.INTER_CUBIC)[y0 - int(cy) + half:y1 - int(cy) + half,
                                                      x0 - int(cx) + half:x1 - int(cx) + half]
    height = radius * (rng.uniform(0.35, 0.8) + rng.uniform(0, 0.05) * bumps)
    height *= (1 - u2) ** rng.uniform(0.5, 1.0)
    gy, gx = np.gradient(height)
    light = np.array([*rng.normal(0, 0.4, 2), 1.0], np.float32)
    light /= np.linalg.norm(light)
    norm = np.sqrt(gx * gx + gy * gy + 1)
    ndotl = np.clip((light[2] - gx * light[0] - gy * light[1]) / norm, 0, 1)
    ambient = rng.uniform(0.3, 0.55)  # higher ambient: softer, lower-contrast rim
    lit = (ambient + (1 - ambient) * ndotl) / (ambient + (1 - ambient) * light[2])
    # Colour: the mucosa under it, paler or redder by a per-polyp amount at a per-polyp
    # contrast, so colour is a useful but imperfect cue; some of the mucosa detail shows through.
    patch, floor = rgb[:, y0:y1, x0:x1], bare[:, y0:y1, x0:x1]
    pale = rng.uniform(-0.15, 0.35)
    tint = np.array([1.0, 1 + pale, 1 + 0.9 * pale], np.float32) * rng.uniform(0.9, 1.1)
    tint *= 1 + rng.normal(0, 0.05, 3).astype(np.float32)
    gain = (1 + rng.uniform(0.5, 1.0) * (tint - 1))[:, None, None]
    body = floor * (0.15 * gain)
    body += floor.mean(axis=(1, 2), keepdims=True) * (0.85 * gain)
    body *= lit * (1 + 0.05 * cv2.GaussianBlur(_white(rng, dist.shape), (0, 0), 1.0))
    patch += alpha * (body - patch)
    if rng.random() < 0.6:  # wet surface: glints where the normal bisects light and camera
        hv = light + np.array([0, 0, 1], np.float32)
        hv /= np.linalg.norm(hv)
        ndoth = np.clip((hv[2] - gx * hv[0] - gy * hv[1]) / norm, 0, 1)
        spec = ndoth ** rng.uniform(300, 1500) * inside
        np.maximum(glints[y0:y1, x0:x1], spec, out=glints[y0:y1, x0:x1])


def _vignette(rng: np.random.Generator, size: int) -> np.ndarray:
    """Endoscope light falloff: bright near a (jittered) centre, dark corners."""
    yy, xx = _grid(size)
    cx, cy = (size * (0.5 + float(v)) for v in rng.normal(0, 0.05, 2))
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (0.5 * size) ** 2
    return rng.uniform(0.95, 1.15) * np.exp(-rng.uniform(0.35, 0.6) * r2)


def _scene(rng: np.random.Generator, size: int, polyps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float 3xHxW scene without vignette, its mask, and a glint map in [0, 1]."""
    rgb = _mucosa(rng, size)
    bare = rgb.copy()
    mask = np.zeros((size, size), np.uint8)
    glints = np.zeros((size, size), np.float32)
    for _ in range(polyps):
        _add_polyp(rng, rgb, bare, mask, glints)
    for _ in range(int(rng.integers(1, 6))):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (max(1, int(size * rng.uniform(0.004, 0.02))), max(1, int(size * rng.uniform(0.004, 0.012))))
        cv2.ellipse(glints, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    return rgb, mask, cv2.GaussianBlur(glints, (0, 0), 0.7)


def _finish(rng: np.random.Generator, rgb: np.ndarray, vignette: np.ndarray,
            glints: np.ndarray) -> np.ndarray:
    """Apply lighting, glints and sensor noise to a 3xHxW scene; return uint8 HxWx3 RGB."""
    out = rgb * vignette
    out += 0.012 * _white(rng, out.shape[1:])  # luminance-only sensor noise: a third of the draws
    g = np.minimum(glints * 1.5, 1)
    out += g * (_WHITE[:, None, None] - out)
    out = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
    return cv2.merge(list(out))  # channels last; faster than a transpose copy


def _whole(name: str, value: int, minimum: int, multiple: int = 1) -> int:
    """Return ``value`` as an int, or raise a one-line error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum \
            or value % multiple:
        what = f"a multiple of {multiple} and >= {minimum}" if multiple > 1 else f"a whole number >= {minimum}"
        raise ConvSegError(f"{name} must be {what}, got {value!r}")
    return int(value)


def render_frame(rng: np.random.Generator, size: int, *,
                 empty_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Render one square frame: ``(RGB uint8 HxWx3, mask uint8 HxW with values 0/255)``.

    With probability ``empty_fraction`` the frame has no polyp, otherwise one to three.
    """
    size = _whole("size", size, 16, 16)
    polyps = 0 if rng.random() < empty_fraction else int(rng.integers(1, 4))
    rgb, mask, glints = _scene(rng, size, polyps)
    return _finish(rng, rgb, _vignette(rng, size), glints), mask


def _encode(ext: str, array: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:  # cv2 reports failure only through the flag
        raise ConvSegError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def generate_dataset(out_dir: str | os.PathLike, count: int, size: int = 256, seed: int = 0,
                     empty_fraction: float = 0.15) -> Path:
    """Write ``count`` frames in Kvasir-SEG layout (``images/*.jpg``, ``masks/*.png``) plus a
    README.txt to ``out_dir``, which appears only once every file is written. Returns ``out_dir``.
    """
    count, size, seed = _whole("count", count, 1), _whole("size", size, 32, 16), _whole("seed", seed, 0)
    if not 0.0 <= empty_fraction <= 1.0:
        raise ConvSegError(f"empty_fraction must be between 0 and 1, got {empty_fraction!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvSegError(f"{out} already exists and is not an empty folder: choose another folder or delete it")
    ensure_dir(out.absolute().parent)
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a dataset should be readable like any folder
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i in range(count):
            # Seeding per frame keeps frame i identical whatever the count.
            image, mask = render_frame(np.random.default_rng([seed, i]), size, empty_fraction=empty_fraction)
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            (tmp / "images" / f"synth_{i:05d}.jpg").write_bytes(
                _encode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]))
            (tmp / "masks" / f"synth_{i:05d}.png").write_bytes(_encode(".png", mask, []))
        (tmp / "README.txt").write_text(
            "Synthetic colonoscopy-like frames with exact polyp masks (not patient data), made by\n"
            f"convseg_deploy.synth.generate_dataset: count={count} size={size}x{size} seed={seed} "
            f"empty_fraction={empty_fraction}.\nLayout as Kvasir-SEG: images/<stem>.jpg (JPEG quality "
            f"{JPEG_QUALITY}), masks/<stem>.png (0 background, 255 polyp).\n"
        )
    return out


def write_video(path: str | os.PathLike, count: int, size: int = 256, seed: int = 0, fps: float = 10) -> Path:
    """Write an mp4 (mp4v) of ``count`` frames of one scene while the camera, and so the polyps,
    drift a few pixels per frame. Returns ``path``."""
    count, size, seed = _whole("count", count, 1), _whole("size", size, 32, 16), _whole("seed", seed, 0)
    if not fps > 0:
        raise ConvSegError(f"fps must be positive, got {fps!r}")
    path = Path(path)
    ensure_dir(path.absolute().parent)
    rng = np.random.default_rng([seed, 1 << 30])  # a stream no dataset frame uses
    margin = size // 8
    rgb, _, glints = _scene(rng, size + 2 * margin, int(rng.integers(1, 4)))
    vignette = _vignette(rng, size)  # fixed to the camera, not the scene
    phase = rng.uniform(0, 2 * np.pi, 2)
    # The writer picks the container from the suffix, so the temp name must end in .mp4.
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.absolute().parent)
    os.close(fd)
    tmp = Path(name)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size, size))
    try:
        if not writer.isOpened():
            raise ConvSegError("OpenCV cannot write mp4v video on this machine (no video encoder)")
        for t in range(count):
            ox, oy = np.round(margin * (1 + 0.9 * np.sin(0.15 * t + phase))).astype(int)
            ys, xs = slice(oy, oy + size), slice(ox, ox + size)
            frame = _finish(rng, rgb[:, ys, xs], vignette, glints[ys, xs])
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()  # flushes the container before the rename
        os.replace(tmp, path)
    finally:
        writer.release()
        if tmp.exists():
            tmp.unlink()
    return path
