"""Prompt templates and class-name tables (data, not code; from the task-arithmetic code base).

Templates are ``str.format`` strings with one ``{}`` for the class name, so they can be
hashed into cache keys and shown in the app.
"""
from __future__ import annotations

NUMBER = ('a photo of the number: "{}".',)

EUROSAT = ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
           "a centered satellite photo of the {}.")

GTSRB = ('a zoomed in photo of a "{}" traffic sign.', 'a centered photo of a "{}" traffic sign.',
         'a close up photo of a "{}" traffic sign.')

DTD = tuple(f"a photo of {art} {{}} {kind}." for art in ("a", "the")
            for kind in ("texture", "pattern", "thing", "object"))

CIFAR = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
)

FASHION = ("a photo of a {}.", "a black and white photo of a {}.", "a photo of the {}, a type of clothing.")

FLOWERS = ("a photo of a {}, a type of flower.",)

GENERIC = ("a photo of a {}.", "a photo of the {}.")

DIGIT_NAMES = tuple(str(i) for i in range(10))

FASHION_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle boot")

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

EUROSAT_NAMES = ("annual crop land", "forest", "brushland or shrubland", "highway or road",
                 "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
                 "residential buildings or homes or apartments", "river", "lake or sea")

GTSRB_NAMES = (
    "red and white circle 20 kph speed limit", "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit", "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit", "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit", "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit", "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing", "red and white triangle road intersection warning",
    "white and yellow diamond priority road", "red and white upside down triangle yield right-of-way", "stop",
    "empty red and white circle", "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry", "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning", "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning", "red and white triangle with bicyle warning",
    "red and white triangle with snowflake / ice warning", "red and white triangle with deer warning",
    "white circle with gray strike bar no speed limit", "blue circle with white right turn arrow mandatory",
    "blue circle with white left turn arrow mandatory", "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory",
    "blue circle with white keep right arrow mandatory", "blue circle with white keep left arrow mandatory",
    "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
)


def readable(name: str) -> str:
    """Folder or dataset class name -> prompt-friendly text ('banded_stripes' -> 'banded stripes')."""
    return name.replace("_", " ").replace("-", " ").strip()
