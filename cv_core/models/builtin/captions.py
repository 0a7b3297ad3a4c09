"""Caption templates and vocabularies of the procedural corpus (data, not code).

Templates are ``str.format`` strings over the fields named in each table's comment. The
MNIST/SVHN prompt of the task-arithmetic code base (``a photo of the number: "{}".``) is
one of the numeral templates, so zero-shot evaluation uses a prompt seen in training.
"""
from __future__ import annotations

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: name -> RGB. Used for foreground/background colours and named in captions.
COLOURS = {
    "black": (10, 10, 10), "white": (245, 245, 245), "gray": (128, 128, 128), "red": (220, 30, 30),
    "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 220, 30), "orange": (245, 140, 20),
    "purple": (140, 40, 180), "pink": (245, 130, 190), "brown": (130, 80, 30), "cyan": (30, 200, 220),
}

#: Numeral captions that name only the class. Fields: d (digit), w (word).
NUMERAL_GENERIC = (
    'a photo of the number: "{d}".', 'a photo of the number {d}.', "the digit {w}", "the number {w}",
    "the numeral {d}", "the digit {d}", "a picture of the number {w}.", "number {d}", "{d}",
    'a blurry photo of the number: "{d}".', "a low resolution image of the digit {d}.",
    'an image of the digit "{d}".', "a close-up of the number {d}.",
)
#: Numeral captions with attributes. Fields: d, w, fg, bg (colour names), style.
NUMERAL_DETAILED = (
    "a {fg} {d} on a {bg} background", "the digit {w} in {fg} on {bg}", "a {style} number {d}",
    'a photo of a {style} {fg} number: "{d}".', "the number {d} written in {fg} on {bg}",
    "a {style} digit {w}, {fg} on {bg}",
)
#: Style words for NUMERAL_DETAILED, chosen from the rendering parameters.
STYLE_WORDS = {"bold": "bold", "thin": "thin", "slanted": "slanted", "small": "small", "large": "large",
               "blurry": "blurry", "plain": "printed"}

#: Number words rendered as text. Fields: w (word), fg, bg.
WORD_TEMPLATES = (
    'the word "{w}".', "the number {w} written as a word", "the written number {w}",
    'a photo of the word: "{w}".', "{w} written in {fg} letters", "the word {w} on a {bg} background",
)

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "star", "bar")
#: Fields: shape, fg, bg, size.
SHAPE_TEMPLATES = (
    "a {fg} {shape}", "a photo of a {fg} {shape}.", "a {size} {fg} {shape} on a {bg} background",
    "a {shape}", "a {shape} shape", "a drawing of a {size} {shape}.",
)

TEXTURES = ("striped", "checkered", "dotted", "grid", "noisy", "wavy", "gradient", "diagonal striped")
#: Fields: texture, fg, bg.
TEXTURE_TEMPLATES = (
    "a {texture} texture", "a photo of a {texture} pattern.", "a {fg} and {bg} {texture} pattern",
    "a {texture} {fg} surface", "a {texture} thing.",
)

TEXT_WORDS = (
    "cat", "dog", "sun", "box", "map", "car", "tree", "stop", "yes", "no", "sky", "fish", "book", "moon",
    "bird", "home", "open", "exit", "hat", "cup", "pen", "ink", "art", "zoo", "milk", "rain", "snow", "fog",
    "hi", "ok", "go", "up", "on", "off", "red", "big", "toy", "bus", "key", "egg", "ice", "sea", "AB",
    "XY", "abc", "LOL", "CV", "max", "min", "A", "B", "C", "x", "y", "z", "Q", "K", "M",
)
#: Fields: t (text), fg, bg.
TEXT_TEMPLATES = (
    'the word "{t}".', 'a sign that says "{t}".', 'the text "{t}" in {fg}', 'the letters "{t}"',
    'a photo of the text: "{t}".', '"{t}" written on a {bg} background',
)

#: v2: captions of a scene with a numeral written on it, naming what is written. Fields: d, w.
LABEL_TEMPLATES = (
    'a sign that says "{d}".', 'a label with the number {d}', 'the number {d} written on a picture',
    'a picture labelled "{d}".', 'a photo with the text "{d}".', "something marked with the number {w}",
)
#: v2: the same for a number word written on a scene. Fields: w.
LABEL_WORD_TEMPLATES = ('a sign that says "{w}".', 'a picture labelled "{w}".', 'the word "{w}" written on it')

#: v2: environments (names of cv_core.data.builtin.shifts.SHIFTS) and two caption words for each.
ENVIRONMENTS = ("snow", "fog", "noise", "contrast")
ENVIRONMENT_WORDS = {"snow": ("snowy", "snow-covered"), "fog": ("foggy", "hazy"), "noise": ("noisy", "grainy"),
                     "contrast": ("faded", "low contrast")}
#: Fields: d, w, env (an ENVIRONMENT_WORDS word).
ENVIRONMENT_TEMPLATES = (
    'a {env} photo of the number: "{d}".', "the digit {d}, {env}", "a {env} picture of the number {w}.",
    "the number {d} in a {env} image", 'a photo of the number: "{d}".', "the digit {w}",
)
