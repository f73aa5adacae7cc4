"""Load a teacher or student from a ModelConfig, converting GGUF files once into a safetensors cache.

Example::

    from semflow.config import ModelConfig
    loaded = load_model(ModelConfig(spec="smollm2-135m-instruct"))
    loaded.model, loaded.tokenizer, loaded.load_seconds, loaded.origin   # origin: "gguf-convert" | "cache"

GGUF loading through transformers dequantises every tensor (about 25 s for SmolLM2-135M on 2 cores),
so the first load writes the dequantised model as a plain safetensors directory under the model cache
(default ~/.cache/semflow/models, keyed by the GGUF file's sha256) and later loads read that (< 1 s).
The directory is written to a temporary name and renamed into place, under a file lock, so two
processes converting at once or a crash mid-write never leave a half model behind.

Network: hub ids load with local_files_only whenever HF_HUB_OFFLINE is set (the default pipeline sets
it), safetensors only, and trust_remote_code only when the config says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from components.models.spec import ModelSpecError, ResolvedSpec, resolve_spec
from components.models.tiny import build_tiny_model
from semflow.config import ModelConfig

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/semflow/models").expanduser()
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(RuntimeError):
    """A model that cannot be loaded; the message names the spec."""


@dataclass
class LoadedModel:
    name: str
    model: PreTrainedModel
    tokenizer: object
    load_seconds: float
    origin: str  # "gguf-convert", "cache", "local", "hub", "tiny"


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gguf_cache_dir(resolved: ResolvedSpec, cache_root: Path) -> Path:
    gguf_path = Path(resolved.location) / resolved.gguf_file
    stem = Path(resolved.gguf_file).stem
    return cache_root / f"{stem}-{_sha256(gguf_path)[:16]}"


def convert_gguf(resolved: ResolvedSpec, cache_root: Path) -> tuple[Path, bool]:
    """Return the safetensors directory for a GGUF spec and whether this call created it."""
    target = gguf_cache_dir(resolved, cache_root)
    if (target / "config.json").is_file():
        return target, False
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process finished it while we waited
            return target, False
        log.info("converting %s/%s to safetensors in %s", resolved.location, resolved.gguf_file, target)
        tokenizer = AutoTokenizer.from_pretrained(resolved.location, gguf_file=resolved.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            resolved.location, gguf_file=resolved.gguf_file, dtype=torch.float32
        )
        # The tensors are already dequantised; drop the GGUF marker so save_pretrained accepts them.
        del model.config.quantization_config
        model.hf_quantizer = None
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=cache_root))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target, True


def load_model(cfg: ModelConfig, cache_root: str | Path | None = None) -> LoadedModel:
    """Load model + tokenizer for `cfg` on its device, in eval mode."""
    start = time.perf_counter()
    try:
        resolved = resolve_spec(cfg.spec)
    except ModelSpecError as err:
        raise ModelError(str(err)) from None
    device = pick_device(cfg.device)
    dtype = _DTYPES[cfg.dtype]

    if resolved.kind == "tiny":
        model, tokenizer = build_tiny_model(cfg.tiny)
        origin = "tiny"
    else:
        if resolved.kind == "gguf":
            directory, created = convert_gguf(resolved, Path(cache_root or DEFAULT_CACHE).expanduser())
            source, origin = str(directory), "gguf-convert" if created else "cache"
        else:
            source, origin = resolved.location, resolved.kind
        kwargs = dict(
            trust_remote_code=cfg.trust_remote_code,
            local_files_only=_offline() or resolved.kind != "hub",
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            # Encoder-decoders (T5-style) serve as SE-DSI backbones; every other role needs a causal LM.
            config = AutoConfig.from_pretrained(source, **kwargs)
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_pretrained(source, dtype=dtype, use_safetensors=True, **kwargs)
        except OSError as err:
            where = "the local Hugging Face cache (offline)" if kwargs["local_files_only"] else "the hub"
            raise ModelError(f"model spec {cfg.spec!r}: cannot load from {where}: {err}") from None
    model.to(device=device, dtype=dtype)
    model.eval()
    if tokenizer.pad_token is None:
        # Decoder-only models often ship without a pad token; EOS is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(cfg.spec, model, tokenizer, time.perf_counter() - start, origin)
