"""Building the embedding model a config describes, as a sentence-transformers module list.

The model is ``Transformer -> Pooling -> [Dropout -> Dense(activation)] x depth -> [Dense projection] ->
[Normalize]``: every piece is a stock sentence-transformers module, so the saved folder loads with
``SentenceTransformer(path)`` and gives the same embeddings as training's own encoder.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoembed.config import projection_input
from autoembed.errors import AutoembedError
from autoembed.progressive import encoder_layers

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from autoembed.config import TrialConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
# Names the common Hugging Face encoder configs use for what the config calls heads and dropout.
HEAD_KEYS = ("num_attention_heads", "n_heads", "num_heads")
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout", "hidden_dropout")
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


@dataclass(frozen=True)
class BackboneInfo:
    """What the search needs to know of a base model before building it."""

    ref: str
    path: Path  # the folder the reference resolves to
    transformer_path: Path  # the Hugging Face folder of the transformer inside it
    hidden_size: int
    num_heads: int
    num_layers: int
    model_type: str


def resolve_model_path(ref: str) -> Path:
    """Turn ``package:NAME`` or a folder path into a local folder; never touches the network."""
    if ref.startswith("package:"):
        name = ref.split(":", 1)[1].replace("-", "_")
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise AutoembedError(f"model {ref!r}: no installed Python package {name!r} (pip install it)", key="model") from None
        for attr in ("get_model_path", "MODEL_DIR", "model_path", "MODEL_PATH"):
            value = getattr(module, attr, None)
            if callable(value):
                value = value()
            if value and Path(value, "config.json").is_file():
                return Path(value)
        base = Path(module.__file__).parent
        for candidate in [base, *sorted(p.parent for p in base.rglob("config.json"))]:
            if (candidate / "config.json").is_file():
                return candidate
        raise AutoembedError(f"model {ref!r}: package {name!r} ships no model folder (no config.json inside it)", key="model")
    path = Path(ref)
    if not path.is_dir():
        raise AutoembedError(f"model {ref!r}: no such folder (give a local folder or package:NAME; hub names are not downloaded)", key="model")
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise AutoembedError(f"model {ref!r}: folder has neither config.json nor modules.json", key="model")
    check_weights(ref, path)
    return path


def check_weights(ref: str, path: Path) -> None:
    """A model folder must hold weights; without them every trial would fail (or train from random weights)."""
    try:
        folder = _transformer_folder(path)
    except (ValueError, AttributeError, TypeError):  # not JSON, or not a list of module entries
        raise AutoembedError(f"model {ref!r}: {path / 'modules.json'} is not a sentence-transformers module list", key="model") from None
    if not any(p.suffix in (".safetensors", ".bin") and p.is_file() for p in folder.glob("*")):
        raise AutoembedError(f"model {ref!r}: {folder} has no weights (model.safetensors or pytorch_model.bin)", key="model")


def _transformer_folder(path: Path) -> Path:
    modules = path / "modules.json"
    if modules.is_file():
        for entry in json.loads(modules.read_text()):
            if entry.get("type", "").endswith("Transformer"):
                return path / entry.get("path", "")
    return path


def backbone_info(ref: str) -> BackboneInfo:
    path = resolve_model_path(ref)
    folder = _transformer_folder(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise AutoembedError(f"model {ref!r}: no Hugging Face config.json in {folder}", key="model")
    config = json.loads(config_file.read_text())
    hidden = config.get("hidden_size") or config.get("dim") or config.get("d_model")
    heads = next((config[k] for k in HEAD_KEYS if k in config), None)
    layers = config.get("num_hidden_layers") or config.get("n_layers") or config.get("num_layers")
    if not hidden or not heads:
        raise AutoembedError(f"model {ref!r}: config.json names no hidden size or head count", key="model")
    return BackboneInfo(ref, path, folder, int(hidden), int(heads), int(layers or 0), str(config.get("model_type", "")))


def _config_kwargs(config: TrialConfig, info: BackboneInfo) -> dict:
    arch = config.architecture
    raw = json.loads((info.transformer_path / "config.json").read_text())
    kwargs = {}

    def put(keys: tuple[str, ...], value, what: str) -> None:
        key = next((k for k in keys if k in raw), None)
        if key is None:
            raise AutoembedError(
                f"the backbone (model_type {info.model_type!r}) has no setting for {what}; expected one of {list(keys)} in its config.json",
                key=f"architecture.{what}",
            )
        kwargs[key] = value

    if arch.attention_heads is not None and arch.attention_heads != info.num_heads:
        if info.hidden_size % arch.attention_heads:
            raise AutoembedError(
                f"must divide the backbone's hidden size {info.hidden_size}, got {arch.attention_heads}",
                key="architecture.attention_heads",
            )
        put(HEAD_KEYS, arch.attention_heads, "attention_heads")
    if arch.hidden_dropout is not None:
        put(HIDDEN_DROPOUT_KEYS, arch.hidden_dropout, "hidden_dropout")
    if arch.attention_dropout is not None:
        put(ATTENTION_DROPOUT_KEYS, arch.attention_dropout, "attention_dropout")
    return kwargs


def residual_block(width: int, inner: int, activation: nn.Module) -> list[nn.Module]:
    """``x + W2 act(W1 x)`` with ``W2 = 0``: the identity at step 0, as two stock ``Dense`` modules.

    sentence-transformers has no module that adds a skip connection around two layers, and a custom module
    would need ``trust_remote_code`` to load. So the first ``Dense`` (``width -> width + inner``, ``use_residual``)
    carries ``x`` through on its first ``width`` outputs (weights and bias zero there, its residual map ``[I; 0]``,
    and ``act(0) = 0`` for every activation offered) beside ``act(W1 x)``; the second (``width + inner -> width``,
    linear) starts as ``[I, 0]``: ``x`` plus the zero-initialised ``W2``. Every part trains; the saved folder
    loads anywhere with ``SentenceTransformer(path)``.
    """
    from sentence_transformers.sentence_transformer.modules import Dense

    first = Dense(width, width + inner, activation_function=activation, use_residual=True)
    second = Dense(width + inner, width, activation_function=None)
    eye = torch.eye(width)
    with torch.no_grad():
        first.linear.weight[:width].zero_()
        first.linear.bias[:width].zero_()
        first.residual.weight.zero_()
        first.residual.weight[:width] = eye
        second.linear.weight.zero_()
        second.linear.weight[:, :width] = eye
        second.linear.bias.zero_()
    return [first, second]


def build_model(
    config: TrialConfig, *, device: str | torch.device = "cpu", info: BackboneInfo | None = None, pca: torch.Tensor | None = None
) -> SentenceTransformer:
    """Build the model ``config`` describes on top of its base model, with seeded head weights.

    Re-splitting attention heads keeps the pretrained Q/K/V weights and views them as N heads of
    ``hidden / N`` dimensions; the saved config records N, so the model reloads as such. With
    ``architecture.projection_init: pca``, ``pca`` is the base model's principal directions (hidden x hidden,
    columns best first, :func:`autoembed.mining.pca_basis`); the projection starts as the first ``output_dim``.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Dropout, Normalize, Pooling, Transformer

    info = info or backbone_info(config.model)
    arch = config.architecture
    transformer = Transformer(
        str(info.transformer_path),
        config_kwargs=_config_kwargs(config, info),
        max_seq_length=config.data.max_seq_length,
    )
    modules: list[nn.Module] = [transformer, Pooling(info.hidden_size, arch.pooling)]
    torch.manual_seed(config.training.seed)
    width = info.hidden_size
    for _ in range(arch.adapter_depth):
        if arch.head_dropout > 0:
            modules.append(Dropout(arch.head_dropout))
        if arch.adapter_residual:
            modules.extend(residual_block(width, arch.adapter_width, ACTIVATIONS[arch.adapter_activation]()))
            continue
        modules.append(Dense(width, arch.adapter_width, activation_function=ACTIVATIONS[arch.adapter_activation]()))
        width = arch.adapter_width
    if arch.output_dim is not None:
        if arch.output_dim > projection_input(arch, info.hidden_size):
            raise AutoembedError(
                f"must be at most the projection's input width {width}, got {arch.output_dim}", key="architecture.output_dim"
            )
        if arch.head_dropout > 0:
            modules.append(Dropout(arch.head_dropout))
        projection = Dense(width, arch.output_dim, activation_function=None)
        if arch.projection_init == "pca":
            if pca is None or pca.shape[0] != width:
                raise AutoembedError(
                    f"the projection starts from the base model's PCA, but none of width {width} was computed "
                    "(training.prepare computes it when a config asks for it)",
                    key="architecture.projection_init",
                )
            with torch.no_grad():
                projection.linear.weight.copy_(pca[:, : arch.output_dim].T)
                projection.linear.bias.zero_()
        modules.append(projection)
    if arch.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device=str(device))
    return model


def load_encoder(ref: str, *, device: str | torch.device = "cpu", max_seq_length: int | None = None) -> SentenceTransformer:
    """Load a model to evaluate: a sentence-transformers folder, a plain Hugging Face folder, or package:NAME."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    path = resolve_model_path(ref)
    if (path / "modules.json").is_file():
        model = SentenceTransformer(str(path), device=str(device), trust_remote_code=False, local_files_only=True)
    else:
        transformer = Transformer(str(path), max_seq_length=max_seq_length)
        model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")], device=str(device))
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def parameter_groups(model: SentenceTransformer) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """Split trainable parameters into the backbone's and the head's (pooling, adapter, projection)."""
    backbone = [(f"0.{n}", p) for n, p in model[0].named_parameters() if p.requires_grad]
    head = [(n, p) for i, module in enumerate(model) if i > 0 for n, p in module.named_parameters(prefix=str(i)) if p.requires_grad]
    return backbone, head


def freeze_lowest_layers(model: SentenceTransformer, n: int) -> int:
    """Freeze the embeddings and the lowest ``n`` encoder layers; return how many layers were frozen."""
    if n <= 0:
        return 0
    hf = model[0].model
    layers = encoder_layers(hf)
    if layers is None:
        raise AutoembedError("cannot find the backbone's encoder layers to freeze", key="training.freeze_layers")
    if n > len(layers):
        raise AutoembedError(f"must be at most the backbone's {len(layers)} layers, got {n}", key="training.freeze_layers")
    embeddings = getattr(hf, "embeddings", None)
    if embeddings is not None:
        embeddings.requires_grad_(False)
    for layer in layers[:n]:
        layer.requires_grad_(False)
    return n
