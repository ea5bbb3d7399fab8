"""What an image is made into before the network sees it, and where each setting came from: the config, else the
pretrained weights (cli.py links their facts from model.net into the data's ``pretrained``), else the default."""

from typing import Any, Literal, NamedTuple

from jsonargparse.typing import restricted_number_type

CropFraction = restricted_number_type("CropFraction", float, [(">", 0), ("<=", 1)])
Interpolation = Literal["nearest", "bilinear", "bicubic"]
DEFAULTS = {"image_size": 224, "crop_pct": 1.0, "interpolation": "bilinear", "mean": None, "std": None}


class Resize(NamedTuple):
    """How a folder's file becomes an image of the task's size: the shorter side resized to size / crop_pct with
    ``interpolation``, then the centre size x size cut out (crop_pct 1: the whole shorter side is kept)."""

    crop_pct: float = 1.0
    interpolation: str = "bilinear"


def resolve(given: dict[str, Any], pretrained: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Each setting in ``given``: its value (None: not set), else the weights', else the default; and where from."""
    values, sources = {}, {}
    for name, value in given.items():
        weights = (pretrained or {}).get(name)
        if name == "interpolation" and weights not in Interpolation.__args__:
            weights = None  # a mode the decoder has no name for ("random"): the default
        values[name], sources[name] = ((value, "config") if value is not None else
                                       (weights, pretrained["source"]) if weights is not None else (DEFAULTS[name], "default"))
    return values, sources


def described(values: dict[str, Any], sources: dict[str, str]) -> str:
    """One line for the run's summary: the settings, grouped by where they came from."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        shown = "none" if value is None else [round(v, 4) for v in value] if isinstance(value, (list, tuple)) else value
        groups.setdefault(sources[name], []).append(f"{name} {shown}")
    return "; ".join(f"{', '.join(settings)} ({source})" for source, settings in groups.items())
