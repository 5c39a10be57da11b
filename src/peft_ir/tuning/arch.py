"""Where the PEFT methods attach inside a Hugging Face encoder (BERT family: BERT/MiniLM, RoBERTa, DistilBERT).

The methods never name a model class; they ask this module for the slots of each Transformer layer (attention
output projection, the two Add & Norm outputs, FFN input/output, the self-attention module), so supporting
another encoder family means adding one detector here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from peft_ir.errors import PeftIRError


@dataclass
class LayerSlots:
    """The modules of one Transformer layer that the methods hook into."""

    index: int
    layer: nn.Module  # input: x_l, output: x_{l+1} (after the last Add & Norm)
    attn_in: nn.Module  # its input is the attention sub-layer's input x (inside the layer's forward)
    self_attention: nn.Module  # computes q, k, v and calls the attention interface (prefix wraps it)
    attn_proj: nn.Linear  # attention output projection
    attn_out: nn.Module  # its output is attn_proj's after the dropout that follows it: series adapter 1 acts on it
    attn_addnorm: nn.Module  # its output is the attention sub-layer's Add & Norm output
    ffn_in: nn.Module  # its input is the FFN input u
    ffn_proj: nn.Linear  # FFN output projection: the parallel adapter adds to its output
    ffn_out: nn.Module  # its output is ffn_proj's after the dropout that follows it: series adapter 2 acts on it
    ffn_addnorm: nn.Module  # its output is the FFN sub-layer's Add & Norm output (= layer output)


@dataclass
class Arch:
    """An encoder seen through its slots, plus the sizes the closed-form parameter counts need."""

    family: str
    model: nn.Module
    encoder: nn.Module  # the base model (model.base_model); everything outside it is the task head
    layer_owner: nn.Module  # module holding the layer list (IAA-M's aside module lives here)
    layers: list[LayerSlots]
    hidden: int
    num_heads: int
    head_dim: int
    intermediate: int
    default_lora_targets: tuple[str, ...]
    head: list[tuple[str, nn.Module]] = field(default_factory=list)  # trains whole (the pooler too, if it trains)
    pooler: tuple[str, nn.Module] | None = None  # a task model's pooler (BERT), in `head` or frozen in the encoder
    _names: dict[int, str] = field(default_factory=dict, repr=False)

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
    def is_cross_encoder(self) -> bool:
        return bool(self.head)

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The encoder's parameters less those of the task head (which holds the pooler when the pooler trains)."""
        in_head = {id(p) for _, m in self.head for p in m.parameters()}
        return [(n, p) for n, p in self.encoder.named_parameters() if id(p) not in in_head]


def _bert_like(encoder: nn.Module) -> list[LayerSlots] | None:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None or len(layers) == 0:
        return None
    first = layers[0]
    needed = ("attention", "intermediate", "output")
    if not all(hasattr(first, n) for n in needed) or not hasattr(first.attention, "self"):
        return None
    slots = []
    for i, layer in enumerate(layers):
        attn = layer.attention
        slots.append(
            LayerSlots(
                index=i,
                layer=layer,
                attn_in=attn,
                self_attention=attn.self,
                attn_proj=attn.output.dense,
                attn_out=attn.output.dropout,  # BertSelfOutput: LayerNorm(dropout(dense(h)) + x)
                attn_addnorm=attn.output,
                ffn_in=layer.intermediate,
                ffn_proj=layer.output.dense,
                ffn_out=layer.output.dropout,  # BertOutput: LayerNorm(dropout(dense(h)) + u)
                ffn_addnorm=layer.output,
            )
        )
    return slots


def _distilbert_like(encoder: nn.Module) -> list[LayerSlots] | None:
    layers = getattr(getattr(encoder, "transformer", None), "layer", None)
    if layers is None or len(layers) == 0 or not hasattr(layers[0], "sa_layer_norm"):
        return None
    return [
        LayerSlots(
            index=i,
            layer=layer,
            attn_in=layer.attention,
            self_attention=layer.attention,
            attn_proj=layer.attention.out_lin,
            attn_out=layer.attention.out_lin,  # DistilBERT has no dropout after out_lin (only on the weights)
            attn_addnorm=layer.sa_layer_norm,
            ffn_in=layer.ffn,
            ffn_proj=layer.ffn.lin2,
            ffn_out=layer.ffn.dropout,  # FFN: dropout(lin2(act(lin1(u))))
            ffn_addnorm=layer.output_layer_norm,
        )
        for i, layer in enumerate(layers)
    ]


def detect(model: nn.Module, train_pooler: bool = False) -> Arch:
    """Find the slots of a supported encoder (bare or with a sequence-classification head).

    A task model's pooler (BERT's tanh layer under the classifier) joins the head when `train_pooler` (it then
    trains whole under every method, as the classifier does); otherwise it stays a frozen part of the encoder.
    """
    config = getattr(model, "config", None)
    encoder = getattr(model, "base_model", model)
    if config is None:
        raise PeftIRError(f"{type(model).__name__} is not a Hugging Face model (no .config)")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise PeftIRError(f"{type(model).__name__} is configured as a decoder; only encoders are supported")
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
    slots = _bert_like(encoder)
    if slots is not None:
        sa = slots[0].self_attention
        return Arch(
            family="bert",
            model=model,
            encoder=encoder,
            layer_owner=encoder.encoder,
            layers=slots,
            hidden=config.hidden_size,
            num_heads=sa.num_attention_heads,
            head_dim=sa.attention_head_size,
            intermediate=slots[0].ffn_proj.in_features,
            default_lora_targets=("query", "value"),
            head=head,
            pooler=pooler_slot,
        )
    slots = _distilbert_like(encoder)
    if slots is not None:
        sa = slots[0].self_attention
        return Arch(
            family="distilbert",
            model=model,
            encoder=encoder,
            layer_owner=encoder.transformer,
            layers=slots,
            hidden=config.dim,
            num_heads=sa.n_heads,
            head_dim=sa.attention_head_size,
            intermediate=slots[0].ffn_proj.in_features,
            default_lora_targets=("q_lin", "v_lin"),
            head=head,
            pooler=pooler_slot,
        )
    raise PeftIRError(
        f"unsupported model {type(model).__name__}: peft-ir tuning supports the BERT family "
        "(BERT/MiniLM, RoBERTa, DistilBERT) as bare encoders or *ForSequenceClassification"
    )
