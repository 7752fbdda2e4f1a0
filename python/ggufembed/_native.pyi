# Type stubs of the extension module (crates/ggufembed-py/src/lib.rs); kept by hand.
from os import PathLike
from pathlib import Path
from typing import Literal, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "MATRYOSHKA_DIMS",
    "NAMED_PROMPTS",
    "ModelError",
    "NativeEmbedder",
    "TextError",
    "__version__",
    "default_model_path",
]

NAMED_PROMPTS: list[tuple[str, str]]
MATRYOSHKA_DIMS: list[int]

class ModelError(Exception):
    """The model file cannot be read or loaded, or the default model cannot be fetched."""

class TextError(ValueError):
    """One input cannot be embedded; ``index`` is its position in the caller's input. The call
    returns no vector, though a long input's batches before it may have been computed."""

    index: int

def default_model_path() -> Path: ...

# PyO3 makes the class with `#[new]` (so `__new__`, no `__init__`) and without `subclass`.
@final
class NativeEmbedder:
    def __new__(
        cls,
        model: str | PathLike[str] | None = None,
        *,
        threads: int | None = None,
        parallelism: Literal["auto", "coarse", "fine"] = "auto",
    ) -> NativeEmbedder: ...
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
