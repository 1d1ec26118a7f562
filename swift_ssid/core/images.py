"""Image decoding shared by every stage: transparency composited onto one documented background.

ms-swift (``swift.template.vision_utils.load_image``) and a plain ``Image.convert("RGB")`` drop the alpha
channel: transparent pixels keep whatever colour they store, usually black, so a black drawing on a
transparent background becomes an all-black square. Every place that turns an image file into pixels
(stage 1 generation, training, retrieval with image inputs: the SSID templates; the HTML report) calls
:func:`composite_alpha` instead, so the model and the reader see the same picture.

The background is **white** (``#ffffff``) unless ``SSID_ALPHA_BACKGROUND`` (see
:mod:`swift_ssid.integration.settings`) names another colour (any PIL colour: ``black``, ``#808080``,
``rgb(0,128,0)``). White is the default because transparent images (icons, stamps, clip art, scans with
their paper removed) are drawn to be seen on a light page.

Pure module (PIL only): no torch, no ms-swift.

Example:
    >>> from PIL import Image
    >>> im = Image.new("RGBA", (2, 1), (0, 0, 0, 0)); im.putpixel((1, 0), (0, 0, 0, 255))
    >>> composite_alpha(im, "white").getpixel((0, 0)), composite_alpha(im, "white").getpixel((1, 0))
    ((255, 255, 255), (0, 0, 0))
"""

from __future__ import annotations

from PIL import Image, ImageColor

DEFAULT_BACKGROUND = "#ffffff"
"""The colour transparent pixels are composited onto unless configured otherwise."""


def parse_background(color: str | None) -> tuple[int, int, int]:
    """The RGB triple of a PIL colour name or hex code (``None`` or blank: :data:`DEFAULT_BACKGROUND`).

    Raises:
        ValueError: the colour is not one PIL knows (the message names it and shows valid forms).
    """
    text = (color or "").strip() or DEFAULT_BACKGROUND
    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise ValueError(
            f"background colour {text!r} is not a colour; use a name (white, black), a hex code (#808080) or rgb(r,g,b)"
        ) from None
    return rgb[0], rgb[1], rgb[2]


def has_alpha(image: Image.Image) -> bool:
    """True when the image carries transparency (an alpha channel or a transparent palette/colour key)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def composite_alpha(image: Image.Image, background: str | None = None) -> Image.Image:
    """Return the image as RGB, transparent areas composited onto ``background`` (see the module docstring).

    Args:
        image: any PIL image (opaque ones are only converted to RGB).
        background: a PIL colour; None: :data:`DEFAULT_BACKGROUND`.

    Returns:
        A new RGB image of the same size.
    """
    if not has_alpha(image):
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*parse_background(background), 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def open_rgb(path: str, background: str | None = None) -> Image.Image:
    """Open and decode an image file as RGB with transparency composited (EXIF orientation applied).

    Raises:
        OSError: the file cannot be read or decoded (PIL's ``UnidentifiedImageError`` is an ``OSError``).
    """
    from PIL import ImageOps

    with Image.open(path) as im:
        im.load()
        return composite_alpha(ImageOps.exif_transpose(im), background)
