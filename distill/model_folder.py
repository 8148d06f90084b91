"""Reading a model folder: its config and weights checked, then loaded for inference.

Every command that loads a trained model (generate, evaluate, serve, the samples stage, the
student's teachers) goes through :func:`load_model` / :func:`load_causal_lm`, so a damaged folder
(weights cut short, a config that is not an object, shapes that do not match) is one line that
names the file and the fix, never a traceback. Weights are read as safetensors only.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from distill.artifacts import ModelInfo, read_info
from distill.errors import DistillError, not_utf8


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def check_model_dir(model_dir: str | Path) -> Path:
    """The folder as a Path, checked as a saved model without loading it: ``config.json`` is a JSON
    object and every ``*.safetensors`` file has a readable header and holds the tensors it lists.
    DistillError naming the folder or the file and the fix otherwise."""
    path = Path(model_dir)
    if not path.exists():
        raise DistillError(f"{path}: no such model folder; train one first (python -m distill run RECIPE.yaml) or check the path")
    if not path.is_dir():
        raise DistillError(f"{path}: not a folder; give a model folder holding config.json and model.safetensors")
    if not (path / "config.json").is_file():
        hint = "training may still be running or was interrupted (resume it)" if (path / "checkpoints").is_dir() else "give a folder written by save_pretrained"
        raise DistillError(f"{path}: no config.json, so not a finished model folder; {hint}")
    if not any(path.glob("*.safetensors")):
        raise DistillError(f"{path}: no *.safetensors weights (only safetensors are loaded); re-save the model with save_pretrained(safe_serialization=True)")
    model_config(path)
    weight_shapes(path)
    return path


_RESAVE = "retrain the model, or copy or re-save the folder (save_pretrained)"


def model_config(model_dir: str | Path) -> dict:
    """A model folder's ``config.json`` as a dict; DistillError naming it when it is unreadable or not a JSON object."""
    path = Path(model_dir) / "config.json"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise DistillError(f"{path}: cannot read it ({err.strerror or err}); {_RESAVE}") from None
    except UnicodeDecodeError as err:
        raise not_utf8(path, err, _RESAVE) from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise DistillError(f"{path}: not valid JSON ({err}); {_RESAVE}") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path}: holds a JSON {type(data).__name__}, not an object of model settings; {_RESAVE}")
    return data


def weight_shapes(model_dir: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (file name, shape)}`` over a model folder's ``*.safetensors`` files, from their
    headers; DistillError naming a file that is empty, cut short or not safetensors."""

    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        try:
            # Opening parses the header and checks that the file's bytes cover every tensor it lists;
            # numpy, not torch: the header is all that is read, and a bad folder fails before torch loads.
            with safe_open(str(file), framework="numpy") as handle:
                for name in handle.keys():
                    shapes[name] = (file.name, tuple(handle.get_slice(name).get_shape()))
        except (SafetensorError, OSError) as err:
            raise DistillError(f"{file}: not readable safetensors ({err}); the file is empty, cut short or damaged: {_RESAVE}") from None
    return shapes


def check_shapes(model_dir: str | Path, config) -> None:
    """DistillError when a tensor of the folder's weights has another shape than ``config`` (the
    folder's loaded ``PretrainedConfig``) gives it: config.json and the weights are of two models."""

    path = Path(model_dir)
    try:
        with torch.device("meta"):  # the shapes only: no memory, no initialisation
            expected = {name: tuple(t.shape) for name, t in AutoModelForCausalLM.from_config(config).state_dict().items()}
    except (ValueError, TypeError) as err:  # a setting of the wrong kind in config.json
        raise DistillError(f"{path / 'config.json'}: not a usable model config ({str(err).splitlines()[0]}); {_RESAVE}") from None
    for name, (file, shape) in weight_shapes(path).items():
        if name in expected and expected[name] != shape:
            raise DistillError(
                f"{path / file}: {name} has shape {shape} but {path / 'config.json'} makes it {expected[name]}; "
                f"the config and the weights are of two different models: {_RESAVE}"
            )


def load_causal_lm(model_dir: str | Path, dtype=None):
    """The one way a model folder's weights are loaded (:func:`load_model`, a student's teachers): the
    ``AutoModelForCausalLM`` on the CPU, from safetensors only, after :func:`check_model_dir` and
    :func:`check_shapes`, so a damaged or mismatched folder is one DistillError naming the file.
    ``dtype`` None keeps transformers' default."""
    path = check_model_dir(model_dir)

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise DistillError(f"{path / 'config.json'}: not a usable model config ({str(err).splitlines()[0]}); {_RESAVE}") from None
    check_shapes(path, config)
    kwargs = {} if dtype is None else {"dtype": torch_dtype(dtype)}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local folder loads in a blink; its per-tensor bar is noise
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, **kwargs)
    except (OSError, ValueError) as err:
        raise DistillError(f"{path}: cannot load the model ({str(err).splitlines()[0]}); {_RESAVE}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def torch_dtype(dtype):
    """``torch.float32`` / ``bfloat16`` / ``float16`` from a dtype or its name (``"bf16"``, ``"fp16"``, ...)."""

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise DistillError(f"dtype: {dtype!r} is not one of float32, bfloat16, float16")
    return getattr(torch, name)


def default_device() -> str:

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None = None) -> str:
    """``device`` (default :func:`default_device`) when this machine has it; DistillError naming it and the fix otherwise."""

    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise DistillError(f"device {device!r}: not a device name; use cpu, cuda, cuda:N or mps") from None
    present = {"cpu": lambda: True, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if parsed.type not in present:
        raise DistillError(f"device {device!r}: distill runs models on cpu, cuda, cuda:N or mps")
    if not present[parsed.type]():
        raise DistillError(f"device {device!r}: {parsed.type.upper()} is not available on this machine (torch {torch.__version__}); use cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise DistillError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return str(parsed)


def load_model(model_dir: str | Path, device: str | None = None, dtype=None):
    """Load a model folder for inference: ``(model, tokenizer, info)``.

    ``model`` is the ``AutoModelForCausalLM`` in ``eval()`` mode on ``device`` (default: CUDA when
    present, else CPU) in ``dtype`` (default float32; also "bf16"/"fp16"), loaded from safetensors
    only. ``tokenizer`` is the folder's ``AutoTokenizer``. ``info`` is its :class:`ModelInfo`
    (an empty one for a plain transformers folder); pass ``info.seq_len`` to generation as the
    trained context.
    """
    path = check_model_dir(model_dir)  # before anything loads: a wrong path or a damaged file fails at once
    device = check_device(device)
    info = read_info(path) or ModelInfo()

    dtype = torch_dtype(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise DistillError(f"{path}: cannot load the tokenizer ({str(err).splitlines()[0]}); the folder needs tokenizer.json from the training run") from None
    model = load_causal_lm(path, dtype)
    vocab = model.get_output_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise DistillError(f"{path}: tokenizer has {len(tokenizer)} tokens but the model only {vocab} rows; the folder mixes two runs, retrain the model")
    model.to(device)
    model.eval()
    return model, tokenizer, info
