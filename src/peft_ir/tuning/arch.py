"""Where the PEFT methods attach inside a Hugging Face backbone: one table of architectures keyed by `model_type`.

The methods never name a model class; they ask this module for the slots of each Transformer layer (attention
block, its output projection, FFN input/output, where a sub-layer's result joins the residual stream). Each entry of
ARCHITECTURES gives those slots as dotted paths (from the base model to the layer list, and inside one layer) and
says whether the family normalises after each sub-layer (post-norm: BERT, RoBERTa, DistilBERT, ...) or before it
(pre-norm: Llama, Qwen, Mistral, ModernBERT), as peft's utils/constants.py maps model types to LoRA targets.
Supporting another family means adding one entry here (and one tiny-config row to tests/tiny_models.py).
Types not in the table fall back to the structural detectors below (BERT-like, DistilBERT-like).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.modules import TrainsWhole

POST_NORM, PRE_NORM = "post", "pre"


@dataclass(frozen=True)
class Family:
    """The slots of one backbone family as dotted paths: `layers` from the base model, the rest inside one layer.

    post-norm layer: u = LN_1(x + Attn(x)); y = LN_2(u + FFN(u)).
    pre-norm layer:  h = x + Attn(LN_1(x)); y = h + FFN(LN_2(h)).
    """

    norm: str  # POST_NORM or PRE_NORM
    layers: str  # the layer list (an nn.ModuleList)
    attention: str  # computes q, k, v and attends: prefix tuning acts there (through transformers' attention
    # interface, or, where the module computes attention itself, through hooks on the projections in kv_proj)
    attn_in: str  # its input is the attention sub-layer's input x (the residual stream)
    attn_proj: str  # attention output projection
    attn_out: str  # its output is attn_proj's after any dropout that follows it (series adapter 1)
    attn_join: str  # its output brings the attention result into the stream: the Add & Norm (post) / the block (pre)
    ffn_in: str  # its input is the FFN sub-layer's input on the residual stream: u (post) / h (pre)
    ffn_inner: str  # its input is what the FFN itself reads: u (post) / LN_2(h) (pre); the parallel adapter's source
    ffn_proj: str  # FFN output projection: the parallel adapter adds to its output
    ffn_out: str  # its output is ffn_proj's after any dropout that follows it (series adapter 2)
    ffn_join: str  # its output brings the FFN result into the stream: the Add & Norm (post) / the FFN (pre)
    lora_targets: tuple[str, ...]  # default LoRA targets (peft's utils/constants.py where it lists the type)
    causal: bool = False  # a decoder (causal attention): its last token sees the whole text (last-token pooling/head)
    kv_proj: tuple[str, str] | None = None  # key and value projections inside `attention`, for a family whose attention
    # does not call transformers' attention interface: prefixes enter through hooks on them (tuning/methods/prefix.py)


BERT = Family(
    norm=POST_NORM, layers="encoder.layer", attention="attention.self", attn_in="attention",
    attn_proj="attention.output.dense",
    attn_out="attention.output.dropout",  # BertSelfOutput: LN(dropout(dense(h)) + x)
    attn_join="attention.output", ffn_in="intermediate", ffn_inner="intermediate", ffn_proj="output.dense",
    ffn_out="output.dropout", ffn_join="output",  # BertOutput: LN(dropout(dense(h)) + u)
    lora_targets=("query", "value"),
)
DISTILBERT = Family(
    norm=POST_NORM, layers="transformer.layer", attention="attention", attn_in="attention",
    attn_proj="attention.out_lin", attn_out="attention.out_lin",  # no dropout after out_lin (only on the weights)
    attn_join="sa_layer_norm", ffn_in="ffn", ffn_inner="ffn", ffn_proj="ffn.lin2",
    ffn_out="ffn.dropout", ffn_join="output_layer_norm",  # FFN: dropout(lin2(act(lin1(u))))
    lora_targets=("q_lin", "v_lin"),
)
MPNET = Family(
    norm=POST_NORM, layers="encoder.layer", attention="attention.attn", attn_in="attention",
    attn_proj="attention.attn.o", attn_out="attention.dropout",  # MPNetAttention: LN(dropout(o(c)) + x)
    attn_join="attention", ffn_in="intermediate", ffn_inner="intermediate", ffn_proj="output.dense",
    ffn_out="output.dropout", ffn_join="output",
    lora_targets=("q", "v"), kv_proj=("k", "v"),  # MPNetSelfAttention computes its attention itself
)
MODERNBERT = Family(
    norm=PRE_NORM, layers="layers", attention="attn", attn_in="attn_norm",  # layer 0's attn_norm is an Identity
    attn_proj="attn.Wo", attn_out="attn.out_drop", attn_join="attn",
    ffn_in="mlp_norm", ffn_inner="mlp", ffn_proj="mlp.Wo", ffn_out="mlp.Wo", ffn_join="mlp",
    lora_targets=("Wqkv",),  # q, k and v share one fused projection
)
LLAMA = Family(
    norm=PRE_NORM, layers="layers", attention="self_attn", attn_in="input_layernorm",
    attn_proj="self_attn.o_proj", attn_out="self_attn.o_proj", attn_join="self_attn",
    ffn_in="post_attention_layernorm", ffn_inner="mlp", ffn_proj="mlp.down_proj", ffn_out="mlp.down_proj",
    ffn_join="mlp",
    lora_targets=("q_proj", "v_proj"), causal=True,
)

ARCHITECTURES: dict[str, Family] = {
    "bert": BERT,
    "roberta": BERT,
    "xlm-roberta": BERT,
    "electra": BERT,
    "distilbert": DISTILBERT,
    "mpnet": MPNET,
    "modernbert": MODERNBERT,
    "llama": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "mistral": LLAMA,
}


def is_causal(config: object) -> bool:
    """Whether a model config's type is a decoder of the table (its last token is the one that has read the text)."""
    spec = ARCHITECTURES.get(str(getattr(config, "model_type", "") or ""))
    return spec is not None and spec.causal


HOW_TO_ADD = ("add an entry for it to ARCHITECTURES in peft_ir/tuning/arch.py (the dotted paths of the layer list and "
              "of each layer's slots, pre- or post-norm) and a tiny-config row to tests/tiny_models.py")


@dataclass
class LayerSlots:
    """The modules of one Transformer layer that the methods hook into (see `Family` for what each one is)."""

    index: int
    layer: nn.Module  # input: x_l, output: x_{l+1} (after the last Add & Norm / the last residual add)
    attn_in: nn.Module
    self_attention: nn.Module
    attn_proj: nn.Linear
    attn_out: nn.Module
    attn_join: nn.Module
    ffn_in: nn.Module
    ffn_inner: nn.Module
    ffn_proj: nn.Linear
    ffn_out: nn.Module
    ffn_join: nn.Module


@dataclass
class Arch:
    """A backbone seen through its slots, plus the sizes the closed-form parameter counts need."""

    family: str  # the config's model_type (or the detector that recognised an unknown type)
    model: nn.Module
    encoder: nn.Module  # the base model (model.base_model); everything outside it is the task head
    layer_owner: nn.Module  # module holding the layer list (IAA-M's aside module lives here)
    layers: list[LayerSlots]
    hidden: int
    num_heads: int
    head_dim: int
    intermediate: int
    default_lora_targets: tuple[str, ...]
    norm: str = POST_NORM
    num_kv_heads: int = 0  # key/value heads (fewer than num_heads under grouped-query attention); 0: num_heads
    head: list[tuple[str, nn.Module]] = field(default_factory=list)  # trains whole (the pooler too, if it trains)
    pooler: tuple[str, nn.Module] | None = None  # a task model's pooler (BERT), in `head` or frozen in the encoder
    spec: Family | None = None  # the table entry (or detector result) the slots were found by
    _names: dict[int, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.num_kv_heads:
            self.num_kv_heads = self.num_heads

    def name_of(self, module: nn.Module) -> str:
        """Dotted name of a module inside the model (for descriptions and checkpoint keys)."""
        if not self._names:
            self._names = {id(m): n for n, m in self.model.named_modules()}
        return self._names.get(id(module), f"<{type(module).__name__}>")

    def pattern(self, pick: str) -> str:
        """Name pattern of one slot across layers, e.g. encoder.layer.{0..11}.attention.output.dense."""
        layer_name = self.name_of(self.layers[0].layer)
        owner = layer_name.rpartition(".")[0]
        span = "{0..%d}" % (self.num_layers - 1) if self.num_layers > 1 else "0"
        rest = self.name_of(getattr(self.layers[0], pick))[len(layer_name):]
        return f"{owner}.{span}{rest}"

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def pre_norm(self) -> bool:
        return self.norm == PRE_NORM

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The encoder's parameters less those of the task head (which holds the pooler when the pooler trains)."""
        in_head = {id(p) for _, m in self.head for p in m.parameters()}
        return [(n, p) for n, p in self.encoder.named_parameters() if id(p) not in in_head]


def _bert_like(encoder: nn.Module) -> Family | None:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None or len(layers) == 0:
        return None
    first = layers[0]
    if not all(hasattr(first, n) for n in ("attention", "intermediate", "output")):
        return None
    if not hasattr(first.attention, "self"):
        return None
    return BERT


def _distilbert_like(encoder: nn.Module) -> Family | None:
    layers = getattr(getattr(encoder, "transformer", None), "layer", None)
    if layers is None or len(layers) == 0 or not hasattr(layers[0], "sa_layer_norm"):
        return None
    return DISTILBERT


DETECTORS = (("bert", _bert_like), ("distilbert", _distilbert_like))  # the fallback for types not in the table


def _get(root: nn.Module, path: str, model_type: str, what: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise PeftIRError(
            f"model_type '{model_type}': {type(root).__name__} has no module '{path}' (the {what} slot of its entry "
            "in ARCHITECTURES, peft_ir/tuning/arch.py); this checkpoint's layout differs from the table's"
        ) from None


SLOT_NAMES = ("attn_in", "attn_proj", "attn_out", "attn_join", "ffn_in", "ffn_inner", "ffn_proj", "ffn_out", "ffn_join")


def _slots(encoder: nn.Module, spec: Family, model_type: str) -> tuple[nn.Module, list[LayerSlots]]:
    layers = _get(encoder, spec.layers, model_type, "layers")
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise PeftIRError(f"model_type '{model_type}': '{spec.layers}' is not a non-empty list of layers")
    owner = _get(encoder, spec.layers.rpartition(".")[0], model_type, "layers") if "." in spec.layers else encoder
    slots = []
    for i, layer in enumerate(layers):
        found = {name: _get(layer, getattr(spec, name), model_type, name) for name in SLOT_NAMES}
        attention = _get(layer, spec.attention, model_type, "attention")
        slots.append(LayerSlots(index=i, layer=layer, self_attention=attention, **found))
    return owner, slots


def _size(config: object, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def detect(model: nn.Module, train_pooler: bool = False) -> Arch:
    """Find the slots of a supported backbone (bare or with a sequence-classification head).

    A task model's pooler (BERT's tanh layer under the classifier) joins the head when `train_pooler` (it then
    trains whole under every method, as the classifier does); otherwise it stays a frozen part of the encoder.
    """
    config = getattr(model, "config", None)
    encoder = getattr(model, "base_model", model)
    if config is None:
        raise PeftIRError(f"{type(model).__name__} is not a Hugging Face model (no .config)")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise PeftIRError(f"{type(model).__name__} is configured as a decoder; only encoders are supported")
    model_type = str(getattr(config, "model_type", "") or "")
    spec = ARCHITECTURES.get(model_type)
    family = model_type
    if spec is None:
        for name, detector in DETECTORS:
            spec = detector(encoder)
            if spec is not None:
                family = name
                break
    if spec is None:
        raise PeftIRError(
            f"unsupported architecture: model_type '{model_type or '?'}' ({type(model).__name__}) is not in peft-ir's "
            f"architecture table (covered: {', '.join(ARCHITECTURES)}) and its layers do not look BERT- or "
            f"DistilBERT-like; to support it, {HOW_TO_ADD}"
        )
    head: list[tuple[str, nn.Module]] = []
    pooler_slot = None
    if encoder is not model:  # a task model: its children other than the encoder form the head
        head = [(n, m) for n, m in model.named_children() if m is not encoder and any(True for _ in m.parameters())]
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()):
            encoder_name = next(n for n, m in model.named_children() if m is encoder)
            pooler_slot = (f"{encoder_name}.pooler", pooler)
            if train_pooler:
                head.insert(0, pooler_slot)
    head += [(n, m) for n, m in model.named_modules() if isinstance(m, TrainsWhole)]
    owner, slots = _slots(encoder, spec, model_type or family)
    hidden = _size(config, "hidden_size", "dim")
    heads = _size(config, "num_attention_heads", "n_heads")
    if hidden is None or heads is None:
        raise PeftIRError(f"model_type '{model_type}': its config names no hidden_size or num_attention_heads")
    return Arch(
        family=family,
        model=model,
        encoder=encoder,
        layer_owner=owner,
        layers=slots,
        hidden=hidden,
        num_heads=heads,
        head_dim=_size(config, "head_dim") or hidden // heads,
        intermediate=slots[0].ffn_proj.in_features,
        default_lora_targets=spec.lora_targets,
        norm=spec.norm,
        num_kv_heads=_size(config, "num_key_value_heads") or heads,
        head=head,
        pooler=pooler_slot,
        spec=spec,
    )
