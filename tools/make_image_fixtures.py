#!/usr/bin/env python3
"""Makes the image fixtures of the shared loader's tests (src/image_io.rs, tests/image_io.rs)
with Pillow, the authors' loader, and the reference decodings beside them.

    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install pillow
    .venv-fixtures/bin/python tools/make_image_fixtures.py

Writes into fixtures/images/:
  webp-lossy.webp, webp-lossless.webp, webp-alpha.webp, webp-animated.webp,
  gif-animated.gif, bmp-rgb.bmp, tiff-rgb.tif, tiff-cmyk.tif  (formats to decode)
  truncated.jpg  (a baseline JPEG cut to half its length: must be rejected)
and expected/<stem>.png for each decodable one: Pillow's exif_transpose + convert('RGB')
of frame 0, the reference the Rust decoder is compared with. Deterministic (no randomness).
"""

import io
import os

from PIL import Image, ImageOps

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images")
W, H = 40, 24


def pattern(shift=0):
    """An RGB picture with gradients and hard edges, so colour or layout errors show."""
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        for x in range(W):
            r = (x * 255) // (W - 1)
            g = (y * 255) // (H - 1)
            b = 255 if ((x + shift) // 8 + y // 8) % 2 else 40
            px[x, y] = (r, g, b)
    return img


def with_alpha(img):
    rgba = img.convert("RGBA")
    a = Image.new("L", (W, H))
    ap = a.load()
    for y in range(H):
        for x in range(W):
            ap[x, y] = 255 if x < W // 2 else 64 + 4 * y
    rgba.putalpha(a)
    return rgba


def save_expected(name):
    path = os.path.join(OUT, name)
    with Image.open(path) as im:
        im.seek(0)
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    stem = name.rsplit(".", 1)[0]
    rgb.save(os.path.join(OUT, "expected", stem + ".png"))


def main():
    os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
    base = pattern()

    base.save(os.path.join(OUT, "webp-lossy.webp"), "WEBP", quality=90, method=4)
    base.save(os.path.join(OUT, "webp-lossless.webp"), "WEBP", lossless=True)
    # exact=True keeps the colour under transparent pixels, which convert('RGB') shows.
    with_alpha(base).save(os.path.join(OUT, "webp-alpha.webp"), "WEBP", lossless=True, exact=True)
    frames = [pattern(0), pattern(8), pattern(16)]
    frames[0].save(
        os.path.join(OUT, "webp-animated.webp"),
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        lossless=True,
    )
    # GIF: a palette of the picture (no transparency), three frames; frame 0 is used.
    gif_frames = [f.quantize(colors=64, dither=Image.Dither.NONE) for f in frames]
    gif_frames[0].save(
        os.path.join(OUT, "gif-animated.gif"),
        save_all=True,
        append_images=gif_frames[1:],
        duration=100,
        loop=0,
    )
    base.save(os.path.join(OUT, "bmp-rgb.bmp"), "BMP")
    base.save(os.path.join(OUT, "tiff-rgb.tif"), "TIFF")
    base.convert("CMYK").save(os.path.join(OUT, "tiff-cmyk.tif"), "TIFF")

    for name in [
        "webp-lossy.webp",
        "webp-lossless.webp",
        "webp-alpha.webp",
        "webp-animated.webp",
        "gif-animated.gif",
        "bmp-rgb.bmp",
        "tiff-rgb.tif",
        "tiff-cmyk.tif",
    ]:
        save_expected(name)

    # A JPEG cut to half its length: Pillow refuses it ("image file is truncated").
    buf = io.BytesIO()
    pattern().resize((160, 96)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    with open(os.path.join(OUT, "truncated.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])


if __name__ == "__main__":
    main()
