"""The one interface of every facelab generative model (VAEs, AAE, ACAI and GANs).

Images are (B, 3, S, S) floats in [-1, 1] with S = ``config.image_size`` (32 or 64). Every model is a
set of *players*, each with its own parameters and loss, stepped in a fixed order, so one trainer handles
all of them::

    specs = model.recommended_optimizers()  # {group: {"name": "adam", "lr", "betas", "weight_decay"}}
    opts = {g: torch.optim.Adam(ps, lr=specs[g]["lr"], betas=specs[g]["betas"])
            for g, ps in model.parameter_groups().items()}
    for group, k in model.train_step_schedule():      # e.g. [("discriminator", 5), ("generator", 1)]
        for _ in range(k):
            opts[group].zero_grad(set_to_none=True)  # zero per group, before each loss
            out = model.loss(group, batch)           # ModelOutput(loss, logs, recon)
            out.loss.backward()
            opts[group].step()

Single-optimizer models (the VAE family) have one group, ``"model"``, and ``model(batch)`` equals
``model.loss("model", batch)``. ``loss(group, ...)`` builds its graph only through that group's
parameters (the others are frozen while it runs), so a generator loss leaves no gradient on the
discriminator; trainers should still zero each group's gradients before its loss.

A model with groups ``g`` implements ``_loss_<g>(batch)``; see :class:`GenerativeModel`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from facelab.config import StrictConfig
from facelab.errors import ConfigError, FacelabError
from facelab.models.generative.conditions import (
    Condition,
    conditions_width,
    describe_conditions,
    encode_condition_dict,
)
from facelab.registry import Registry

Conditioning = Literal["never", "optional", "required"]
Betas = tuple[float, float]


class GenerativeConfig(StrictConfig):
    """Options every generative model has. Subclasses add model-specific fields and set ``conditioning``.

    Attributes:
        image_size: side of the square images, 32 or 64.
        latent_dim: size of the latent vector z.
        width: channels of the first (highest-resolution) conv stage; doubles per stage.
        max_width: cap on the channels of any stage.
        conditions: named conditions (binary attributes, categorical labels) of a conditional model.
        cond_dim: size of the condition vector; derived from ``conditions`` when those are given, or set
            alone for an unnamed condition vector (then ``make_cond`` takes tensors only).
    """

    conditioning: ClassVar[Conditioning] = "never"

    image_size: Literal[32, 64] = 64
    latent_dim: int = Field(128, ge=1)
    width: int = Field(32, ge=1)
    max_width: int = Field(512, ge=1)
    conditions: list[Condition] | None = None
    cond_dim: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_conditions(self) -> GenerativeConfig:
        if self.conditions is not None:
            names = [c.name for c in self.conditions]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"`conditions` must be a non-empty list of uniquely named conditions; got {names}")
            width = conditions_width(self.conditions)
            if self.cond_dim is not None and self.cond_dim != width:
                raise ValueError(f"cond_dim={self.cond_dim} but the conditions {names} make a vector of {width}")
        total = self.total_cond_dim()
        if self.conditioning == "never" and total:
            raise ValueError("this model is unconditional: remove `conditions`/`cond_dim` (or use cvae, cgan or aae)")
        if self.conditioning == "required" and not total:
            raise ValueError(
                "this model is conditional: give `conditions` (a list of {name, kind: binary|categorical, classes}) "
                "or `cond_dim`"
            )
        return self

    def total_cond_dim(self) -> int:
        """Size of the condition vector (0 for an unconditional model)."""
        if self.conditions is not None:
            return conditions_width(self.conditions)
        return self.cond_dim or 0


@dataclass
class GenBatch:
    """A training batch: images in [-1, 1] and, for conditional models, their condition vectors."""

    x: Tensor  # (B, 3, S, S)
    cond: Tensor | None = None  # (B, cond_dim)

    def to(self, device: torch.device | str) -> GenBatch:
        return GenBatch(self.x.to(device), None if self.cond is None else self.cond.to(device))


@dataclass
class ModelOutput:
    """The loss of one player on one batch, scalar logs (detached floats) and, for autoencoders, recon."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)
    recon: Tensor | None = None  # (B, 3, S, S) in [-1, 1], detached


def adam(lr: float, betas: Betas) -> dict[str, Any]:
    """An optimizer recommendation in the trainer's per-group format (Adam, no weight decay)."""
    return {"name": "adam", "lr": lr, "betas": tuple(betas), "weight_decay": 0.0}


def logs_of(**values: Tensor | float) -> dict[str, float]:
    """Detached float logs from tensors or numbers."""
    return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in values.items()}


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def grads_only_for(module: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter of ``module`` outside ``params`` for the block (graphs built inside skip them)."""
    keep = {id(p) for p in params}
    frozen = [p for p in module.parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


class GenerativeModel(nn.Module, abc.ABC):
    """Base of every generative model; see the module docstring for the training protocol.

    Subclasses set ``config_class``, build their networks in ``__init__`` and implement ``_generate``
    (latent -> image), ``recommended_optimizers`` and one ``_loss_<group>(batch)`` per parameter group.
    Autoencoders set ``has_encoder = True`` and implement ``_encode``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[GenerativeConfig]] = GenerativeConfig
    has_encoder: ClassVar[bool] = False

    def __init__(self, config: GenerativeConfig | None = None) -> None:
        super().__init__()
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{self.name} expects a {self.config_class.__name__}, got {type(config).__name__}; "
                f"build models with create_generative({self.name!r}, **options)"
            )
        self.config = config.model_copy(deep=True)

    # ---- properties ------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def cond_dim(self) -> int:
        """Size of the condition vector (0 when unconditional)."""
        return self.config.total_cond_dim()

    @property
    def is_conditional(self) -> bool:
        return self.cond_dim > 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @classmethod
    def legacy_options(cls, state: Mapping[str, Tensor]) -> dict[str, Any]:
        """Options to load a checkpoint written before an option with a weight-changing default existed
        (read from its weights ``state``); overridden by models that gained such an option."""
        return {}

    # ---- the training protocol -------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each player, by group name; one optimizer per group."""
        return {"model": list(self.parameters())}

    def train_step_schedule(self) -> list[tuple[str, int]]:
        """Ordered ``(group, n_steps)`` pairs making one training iteration."""
        return [("model", 1)]

    @abc.abstractmethod
    def recommended_optimizers(self) -> dict[str, dict[str, Any]]:
        """Per group: ``{"name": "adam", "lr": ..., "betas": (b1, b2), "weight_decay": 0.0}`` from the config."""

    def loss(self, group: str, batch: GenBatch) -> ModelOutput:
        """The loss of player ``group`` on ``batch``; gradients reach only that group's parameters.

        Raises:
            FacelabError: unknown group, images of the wrong shape, or a condition missing/unexpected.
        """
        groups = self.parameter_groups()
        if group not in groups:
            raise FacelabError(f"{self.name} has no parameter group {group!r}; its groups are {list(groups)}")
        batch = self.check_batch(batch)
        with grads_only_for(self, groups[group]):
            return getattr(self, f"_loss_{group}")(batch)

    def forward(self, batch: GenBatch) -> ModelOutput:
        """The loss of a single-group model (``loss("model", batch)``); adversarial models have several."""
        groups = list(self.parameter_groups())
        if len(groups) != 1:
            raise FacelabError(
                f"{self.name} trains several players {groups}: call model.loss(group, batch) for each "
                "(group, n_steps) of model.train_step_schedule()"
            )
        return self.loss(groups[0], batch)

    # ---- sampling and generation -----------------------------------------------------------------
    def sample_latent(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """(n, latent_dim) latents from the prior N(0, I), scaled by ``temperature``."""
        device = generator.device if generator is not None else self.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return (z * temperature).to(self.device, self.dtype)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: Tensor | Mapping[str, int | str] | None = None,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """(n, 3, S, S) images in [-1, 1], generated in eval mode (the model's modes are restored).

        Args:
            n: number of images.
            cond: conditional models: (n, cond_dim) or one row (cond_dim,)/(1, cond_dim) broadcast to all,
                or a label mapping for :meth:`make_cond`; unconditional models: None.
            generator: seeds the latent draws (same seed -> same images).
            temperature: scale of the latent draws (< 1 trades diversity for typicality).
        """
        if n < 1 or temperature <= 0:
            raise FacelabError(f"sample needs n >= 1 and temperature > 0; got n={n}, temperature={temperature}")
        cond = self.check_cond(cond, n)
        with eval_mode(self):
            z = self.sample_latent(n, generator=generator, temperature=temperature)  # (n, latent_dim)
            return self._generate(z, cond).clamp(-1, 1)

    def generate(self, z: Tensor, cond: Tensor | Mapping[str, int | str] | None = None) -> Tensor:
        """Images (B, 3, S, S) in [-1, 1] for latents ``z`` (B, latent_dim); differentiable, current mode."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise FacelabError(f"{self.name}: latents must be (B, {self.latent_dim}); got {tuple(z.shape)}")
        return self._generate(z.to(self.device, self.dtype), self.check_cond(cond, z.shape[0]))

    @abc.abstractmethod
    def _generate(self, z: Tensor, cond: Tensor | None) -> Tensor:
        """(B, latent_dim) [+ (B, cond_dim)] -> (B, 3, S, S) in [-1, 1]."""

    # ---- autoencoders ----------------------------------------------------------------------------
    def encode(self, x: Tensor, cond: Tensor | Mapping[str, int | str] | None = None) -> Tensor:
        """(B, latent_dim) latent codes of images ``x`` (the posterior mean for stochastic encoders)."""
        if not self.has_encoder:
            raise FacelabError(f"{self.name} has no encoder; use an autoencoder (vae, beta_vae, cvae, aae, acai)")
        x = self.check_images(x)
        return self._encode(x, self.check_cond(cond, x.shape[0]))

    def decode(self, z: Tensor, cond: Tensor | Mapping[str, int | str] | None = None) -> Tensor:
        """Images (B, 3, S, S) in [-1, 1] for latent codes ``z``; the inverse direction of :meth:`encode`."""
        if not self.has_encoder:
            raise FacelabError(f"{self.name} has no decoder; use generate(z) for GANs")
        return self.generate(z, cond)

    def _encode(self, x: Tensor, cond: Tensor | None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} sets has_encoder but does not implement _encode")

    # ---- conditions and input checks -------------------------------------------------------------
    def make_cond(self, labels: Mapping[str, object] | Sequence[Mapping[str, object]] | Tensor) -> Tensor:
        """(n, cond_dim) condition vectors from labels, validated against the model's conditions.

        Args:
            labels: ``{"Smiling": 1, "label": "bird"}`` (one row; binary attributes left out are 0, every
                categorical condition is required; values are indices or value names), a list of such
                mappings (one row each), or an already encoded (n, cond_dim) / (cond_dim,) tensor.

        Raises:
            FacelabError: the model is unconditional, a name is unknown or a value out of range (the message
                lists the valid conditions and values), or a tensor has the wrong shape.
        """
        if not self.is_conditional:
            raise FacelabError(f"{self.name} is unconditional; it takes no condition")
        if isinstance(labels, Tensor):
            return self.check_cond(labels, None)
        conditions = self.config.conditions
        if conditions is None:
            raise FacelabError(
                f"{self.name} has an unnamed condition vector of size {self.cond_dim}; pass a (n, {self.cond_dim}) "
                "tensor, or configure named `conditions`"
            )
        rows = [labels] if isinstance(labels, Mapping) else list(labels)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise FacelabError("make_cond takes a mapping {name: value}, a non-empty list of them, or a tensor")
        return torch.stack([encode_condition_dict(conditions, r) for r in rows]).to(self.device, self.dtype)

    def check_cond(self, cond: Tensor | Mapping | Sequence | None, n: int | None) -> Tensor | None:
        """Validate ``cond`` for a batch of ``n`` (None: any) -> (n, cond_dim) on the model's device, or None."""
        if not self.is_conditional:
            if cond is not None:
                raise FacelabError(f"{self.name} is unconditional; do not pass a condition (use cvae, cgan or aae)")
            return None
        if cond is None:
            names = self.config.conditions
            described = describe_conditions(names) if names else f"  an unnamed vector of {self.cond_dim} values"
            raise FacelabError(
                f"{self.name} is conditional; pass cond=model.make_cond({{...}}), a (n, {self.cond_dim}) tensor, for:\n"
                f"{described}"
            )
        if not isinstance(cond, Tensor):
            cond = self.make_cond(cond)
        cond = cond.reshape(1, -1) if cond.ndim == 1 else cond
        if cond.ndim != 2 or cond.shape[1] != self.cond_dim or (n is not None and cond.shape[0] not in (1, n)):
            want = f"({n}, {self.cond_dim}) or (1, {self.cond_dim})" if n is not None else f"(n, {self.cond_dim})"
            raise FacelabError(f"{self.name}: condition must be {want}; got {tuple(cond.shape)}")
        if not bool(torch.isfinite(cond).all()):
            raise FacelabError(f"{self.name}: the condition holds NaN or inf values")
        cond = cond.to(self.device, self.dtype)
        return cond.expand(n, -1) if n is not None and cond.shape[0] == 1 else cond

    def check_images(self, x: Tensor) -> Tensor:
        """Validate a (B, 3, S, S) floating image batch for this model."""
        s = self.image_size
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s) or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise FacelabError(
                f"{self.name}: images must be float (B, 3, {s}, {s}) in [-1, 1] (config image_size={s}); got {got}"
            )
        return x

    def check_batch(self, batch: GenBatch) -> GenBatch:
        """Validate a training batch: image shape and condition presence/shape."""
        if not isinstance(batch, GenBatch):
            raise FacelabError(f"{self.name}: expected a GenBatch(x, cond), got {type(batch).__name__}")
        x = self.check_images(batch.x)
        return GenBatch(x, self.check_cond(batch.cond, x.shape[0]))


GENERATIVE: Registry[GenerativeModel] = Registry("generative model")


def grid_conditions(model: GenerativeModel, n: int) -> Tensor | None:
    """Conditions for a grid: row r of a categorical condition shows class r; binary ones alternate."""
    if not model.is_conditional:
        return None
    rows = []
    for i in range(n):
        r = i // 8
        row = {}
        for c in model.config.conditions:
            row[c.name] = (r % c.width) if c.kind == "categorical" else (r + i) % 2
        rows.append(row)
    return model.make_cond(rows)


def register_generative(name: str):
    """Class decorator: register a GenerativeModel subclass as ``name`` (and set its ``name``)."""

    def deco(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        cls.name = name
        GENERATIVE.register(name)(cls)
        return cls

    return deco


def create_generative(
    name: str, config: GenerativeConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> GenerativeModel:
    """Build the registered generative model ``name`` from a config (object or mapping) plus overrides.

    Raises:
        ConfigError: unknown model name (listing the known ones), or an unknown/invalid config key.
    """
    cls = GENERATIVE.get(name)
    data: dict[str, Any] = config.model_dump() if isinstance(config, GenerativeConfig) else dict(config or {})
    data.update(overrides)
    return cls(cls.config_class.from_dict(data, where=f"{name} config"))
