# Type stubs of the extension module (crates/ggufembed-py/src/lib.rs); kept by hand.
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

__version__: str
NAMED_PROMPTS: list[tuple[str, str]]
MATRYOSHKA_DIMS: list[int]

class ModelError(Exception):
    """The model file cannot be read or loaded, or the default model cannot be fetched."""

class TextError(ValueError):
    """One input cannot be embedded; ``index`` is its position in the call."""

    index: int

def default_model_path() -> Path: ...

class NativeEmbedder:
    def __init__(
        self,
        model: str | PathLike[str] | None = None,
        *,
        threads: int | None = None,
        parallelism: Literal["auto", "coarse", "fine"] = "auto",
    ) -> None: ...
    def embed(
        self,
        texts: list[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dims: int | None = None,
        normalize: bool = False,
        truncation: Literal["right", "left", "error"] = "right",
    ) -> tuple[npt.NDArray[np.float32], list[int], list[bool]]: ...
    def tokenize(
        self,
        texts: list[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncation: Literal["right", "left", "error"] = "right",
    ) -> list[list[int]]: ...
    @property
    def dim(self) -> int: ...
    @property
    def context_length(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def parallelism(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def model_path(self) -> Path: ...
    @property
    def isa(self) -> str: ...
