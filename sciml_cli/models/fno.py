"""Fourier neural operator (Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart & Anandkumar
2021, "Fourier Neural Operator for Parametric Partial Differential Equations").

The network maps an input field ``a`` to an output field ``u`` on a uniform grid::

    v_0 = P(a, x)                                    lifting, pointwise
    v_{l+1} = sigma(W_l v_l + F^{-1}(R_l . F v_l))   Fourier layers (no sigma after the last)
    u = Q(v_L)                                       projection, pointwise

``F`` is the real FFT over the spatial axes and ``R_l`` multiplies the lowest ``modes``
frequencies per axis by learned complex weights and drops the rest. Every weight acts either
pointwise or on Fourier coefficients, never on grid indices, so one set of weights applies at
any resolution (zero-shot super-resolution, Li et al. 2021, section 5.4).

Needs the operator-data view. Besides ``operator_pairs`` the problem must declare the attributes
``in_channels`` (``C_in``), ``out_channels`` (``C_out``) and ``n_dims`` (``d``), so the layers can
be built without generating data.

With ``autoregressive`` (Li et al.'s FNO-2D for Navier–Stokes) the network maps the last
``C_in / c`` snapshots to the next one (``c`` = the problem's ``step_channels``) and is rolled out
``C_out / c`` times, each prediction joining the input window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constraints import NonNegativeFloat, NonNegativeInt, PositiveInt
from ..nn import FourierLayer, pointwise
from ..numerics.metrics import relative_l2
from ..problems.base import Evaluation, OperatorData, Solution
from .base import Model

Activation = Literal["gelu", "relu", "tanh", "silu"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}

#: hidden units of the projection Q, as in the reference implementation of Li et al. (2021)
PROJECTION_WIDTH = 128
#: zero points appended per axis on a non-periodic domain (Li et al. 2021, Darcy flow)
NONPERIODIC_PADDING = 9


def _operator_shape(problem: OperatorData) -> tuple[int, int, int]:
    missing = [k for k in ("in_channels", "out_channels", "n_dims") if getattr(problem, k, None) is None]
    if missing:
        raise ValueError(
            f"problem: {type(problem).__name__} does not declare {', '.join(missing)}, which the "
            "operator-data view requires for building a model without generating data")
    c_in, c_out, d = int(problem.in_channels), int(problem.out_channels), int(problem.n_dims)
    if d not in (1, 2):
        raise ValueError(f"problem: FNO supports 1 or 2 spatial dimensions, {type(problem).__name__} has {d}")
    return c_in, c_out, d


class FNO(Model):
    """Fourier neural operator trained on pairs ``(a, u)`` with the relative L2 loss.

    Parameters
    ----------
    problem
        An operator-data problem; supplies ``in_channels``, ``out_channels`` and ``n_dims``.
        No data is generated when the model is built.
    modes
        Fourier modes kept per axis in every layer (Li et al. 2021 use 16 in 1D, 12 in 2D). Must
        stay below the Nyquist limit of the grid, see :class:`SpectralConv`.
    width
        Channels of the hidden fields ``v_l`` (Li et al. 2021: 64 in 1D, 32 in 2D).
    n_layers
        Fourier layers; the activation follows every one but the last (Li et al. 2021: 4).
    activation
        Nonlinearity of the Fourier layers and the projection (GELU in Li et al. 2021). It is
        what breaks exact resolution invariance: it creates frequencies beyond any band, which
        the next FFT aliases; smooth activations keep that error small, ReLU less so.
    padding
        Zero points appended at the end of every spatial axis after the lifting and cropped
        before the projection, so a non-periodic problem is not treated as periodic (Li et al.
        2021 pad Darcy flow by 9 points). A fixed number of points is a shorter physical length
        on a finer grid, so padding weakens resolution invariance. ``None``: 0 on a periodic
        problem (its ``periodic`` attribute), :data:`NONPERIODIC_PADDING` otherwise.
    grid_channels
        Append the coordinates of the grid points (mapped to ``[0, 1]`` by the train grid's
        extent) to the input channels, as Li et al. (2021) do. On a periodic domain the
        coordinate jumps at the boundary, so it is not band-limited.
    n_train, n_test
        Pairs in the train and test splits (Li et al. 2021: 1000 and 200 for Burgers).
    batch_size
        Pairs per optimiser step (Li et al. 2021: 20); an epoch is ``n_train // batch_size``
        steps, and evaluation runs in chunks of this size.
    resolution
        Grid points per axis of the training data and the default evaluation grid; ``null``
        uses the problem's default.
    autoregressive
        Predict one snapshot (``step_channels`` of the problem) from the ``C_in`` channels before
        it and roll out to ``C_out`` channels, training through the whole rollout, as Li et al.
        (2021) train FNO-2D on Navier–Stokes. Needs a problem whose pairs are consecutive
        snapshots (``step_channels`` set).
    loss_weights
        Weight of the ``data`` term.

    Notes
    -----
    Inputs and outputs are normalised by per-channel mean and standard deviation over the train
    split (all samples and grid points); autoregressive, per field over all snapshots of ``a``
    and ``u`` alike, since predictions are fed back as inputs. Scalars per channel do not depend
    on the grid, so the same statistics serve evaluation at another resolution; the pointwise
    normaliser of Li et al.'s code would not. They are buffers, so they travel in the checkpoint's ``state_dict``.

    Shapes: :meth:`forward` maps ``a`` ``[B, C_in, *S]`` to ``u`` ``[B, C_out, *S]`` with
    ``len(S) == n_dims``, in the problem's units.
    """

    requires = (OperatorData,)
    loss_terms = ("data",)

    def __init__(
        self,
        problem: OperatorData,
        modes: PositiveInt = 16,
        width: PositiveInt = 64,
        n_layers: PositiveInt = 4,
        activation: Activation = "gelu",
        padding: NonNegativeInt | None = None,
        grid_channels: bool = True,
        n_train: PositiveInt = 1000,
        n_test: PositiveInt = 200,
        batch_size: PositiveInt = 20,
        resolution: PositiveInt | None = None,
        autoregressive: bool = False,
        loss_weights: dict[str, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(loss_weights or {"data": 1.0})
        if batch_size > n_train:
            raise ValueError(f"model.batch_size: {batch_size} is larger than model.n_train = {n_train}")
        c_in, c_out, d = _operator_shape(problem)
        self.in_channels, self.out_channels, self.n_dims = c_in, c_out, d
        #: channels the network predicts per application: one snapshot, or all of ``u``
        self.step = c_out
        if autoregressive:
            step = getattr(problem, "step_channels", None)
            if not step or c_in % step or c_out % step:
                why = ("are not consecutive snapshots (no step_channels)" if not step else
                       f"have {c_in} -> {c_out} channels, not whole snapshots of {step}")
                raise ValueError(f"model.autoregressive: {type(problem).__name__}'s pairs {why}, so they "
                                 "cannot be rolled out; set it to false")
            self.step = int(step)
        self.autoregressive = bool(autoregressive)
        if padding is None:
            padding = 0 if getattr(problem, "periodic", True) else NONPERIODIC_PADDING
        self.modes, self.width, self.padding, self.grid_channels = modes, width, padding, grid_channels
        self.n_train, self.n_test, self.batch_size, self.resolution = n_train, n_test, batch_size, resolution

        self.lift = nn.Linear(c_in + (d if grid_channels else 0), width)
        self.layers = nn.ModuleList(FourierLayer(width, modes, d) for _ in range(n_layers))
        # the training grid is known now: too many modes must fail before any data is made
        n = resolution or getattr(problem, "resolution", None)
        if isinstance(n, int) and self.layers:
            self.layers[0].spectral.check_resolution([n + padding] * d)
        self.act = ACTIVATIONS[activation]()
        self.project = nn.Sequential(
            nn.Linear(width, PROJECTION_WIDTH), ACTIVATIONS[activation](), nn.Linear(PROJECTION_WIDTH, self.step))

        # identity until fitted on the train split; buffers so a checkpoint carries them
        self.register_buffer("a_mean", torch.zeros(c_in))
        self.register_buffer("a_std", torch.ones(c_in))
        self.register_buffer("u_mean", torch.zeros(c_out))
        self.register_buffer("u_std", torch.ones(c_out))
        self.register_buffer("grid_low", torch.zeros(d))
        self.register_buffer("grid_high", torch.ones(d))
        self.register_buffer("normaliser_fitted", torch.zeros((), dtype=torch.bool))

        # (key, (a, u, grid)) per split; plain attributes, so not in the state_dict
        self._data_cache: dict[str, tuple[tuple, tuple[Tensor, Tensor, dict[str, Tensor]]]] = {}
        self._permutation: tuple[tuple[int, int], Tensor] | None = None
        #: per-sample relative L2 errors ``[n_test]`` of the last :meth:`evaluate` (CPU, float64)
        self.last_errors: Tensor | None = None

    # -- the network ---------------------------------------------------------------------------
    def _coordinates(self, grid: Mapping[str, Tensor] | Sequence[Tensor] | None, shape: Sequence[int],
                     like: Tensor) -> Tensor:
        """Grid coordinate channels ``[1, d, *S]``."""
        if grid is None:
            # no physical grid: the unit periodic cell x_j = j / n on every axis
            axes = [torch.arange(n, device=like.device, dtype=like.dtype) / n for n in shape]
        else:
            values = list(grid.values()) if isinstance(grid, Mapping) else list(grid)
            if [len(g) for g in values] != list(shape):
                raise ValueError(f"grid: axes of lengths {[len(g) for g in values]} do not match the field {tuple(shape)}")
            span = torch.where(self.grid_high > self.grid_low, self.grid_high - self.grid_low, 1.0)
            axes = [(g.to(like) - self.grid_low[i]) / span[i] for i, g in enumerate(values)]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack(mesh).unsqueeze(0)

    def _network(self, v: Tensor, coords: Tensor | None) -> Tensor:
        """Normalised ``[B, C_in, *S]`` -> normalised ``[B, step, *S]``: lift, Fourier layers,
        projection."""
        d = self.n_dims
        shape = v.shape[2:]
        if coords is not None:
            v = torch.cat([v, coords.expand(v.shape[0], *coords.shape[1:])], dim=1)
        v = pointwise(self.lift, v)  # [B, width, *S]
        if self.padding:
            v = F.pad(v, [0, self.padding] * d)
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i < len(self.layers) - 1:
                v = self.act(v)
        if self.padding:
            v = v[(..., *(slice(0, n) for n in shape))]
        return pointwise(self.project, v)

    def forward(self, a: Tensor, grid: Mapping[str, Tensor] | Sequence[Tensor] | None = None) -> Tensor:
        """Predict the output field.

        Parameters
        ----------
        a
            Input fields ``[B, C_in, *S]`` in the problem's units.
        grid
            Coordinates of the ``d`` spatial axes (lengths ``S``), as ``operator_pairs`` returns
            them; used only with ``grid_channels``. ``None``: ``x_j = j / n`` per axis.

        Returns
        -------
        Tensor
            ``[B, C_out, *S]`` in the problem's units; autoregressive, the ``C_out / step``
            snapshots of the rollout in order.
        """
        d = self.n_dims
        if a.ndim != 2 + d or a.shape[1] != self.in_channels:
            raise ValueError(f"a: expected [B, {self.in_channels}, *S] with {d} spatial axes, got {tuple(a.shape)}")
        per_channel = (1, -1) + (1,) * d
        v = (a - self.a_mean.view(per_channel)) / self.a_std.view(per_channel)
        coords = self._coordinates(grid, a.shape[2:], v) if self.grid_channels else None
        if not self.autoregressive:
            u = self._network(v, coords)
        else:
            # the statistics are shared by all snapshots, so the window stays normalised
            outputs = []
            for _ in range(self.out_channels // self.step):
                outputs.append(self._network(v, coords))
                v = torch.cat([v[:, self.step:], outputs[-1]], dim=1)
            u = torch.cat(outputs, dim=1)
        return u * self.u_std.view(per_channel) + self.u_mean.view(per_channel)

    # -- data ----------------------------------------------------------------------------------
    def _data(self, problem: OperatorData, split: str, resolution: int | None = None
              ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(a, u, grid)`` of a split on the problem's device and dtype, cached per split."""
        n = self.n_train if split == "train" else self.n_test
        resolution = resolution if resolution is not None else self.resolution
        key = (n, resolution, str(problem.device), problem.dtype)
        cached = self._data_cache.get(split)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._data_cache.pop(split, None)  # free the old arrays before making new ones
        a, u, grid = problem.operator_pairs(split, n, resolution)
        expect = [(a, self.in_channels, "a"), (u, self.out_channels, "u")]
        for field, channels, name in expect:
            if field.ndim != 2 + self.n_dims or field.shape[0] != n or field.shape[1] != channels:
                raise ValueError(
                    f"problem: operator_pairs returned {name} of shape {tuple(field.shape)}, expected "
                    f"[{n}, {channels}, *S] with {self.n_dims} spatial axes")
        factory = {"device": problem.device, "dtype": problem.dtype}
        data = a.to(**factory), u.to(**factory), {k: g.to(**factory) for k, g in grid.items()}
        self._data_cache[split] = (key, data)
        return data

    @torch.no_grad()
    def fit_normaliser(self, problem: OperatorData) -> None:
        """Set the normalisation buffers from the train split, unless a checkpoint already did."""
        if bool(self.normaliser_fitted):
            return
        a, u, grid = self._data(problem, "train")

        def stats(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
            x = x.double()
            m, s = x.mean(dims), x.std(dims, correction=0)
            # a constant channel carries no information to scale; leave it unscaled
            return m, torch.where(s > 1e-12 * torch.clamp(m.abs(), min=1.0), s, torch.ones_like(s))

        if self.autoregressive:  # per field, pooled over every snapshot of a and u
            c = self.step
            m, s = stats(torch.cat([a, u], dim=1).unflatten(1, (-1, c)).transpose(1, 2).flatten(2), [0, 2])
            for mean, std, n in ((self.a_mean, self.a_std, self.in_channels), (self.u_mean, self.u_std, self.out_channels)):
                mean.copy_(m.repeat(n // c))
                std.copy_(s.repeat(n // c))
        else:
            dims = [0, *range(2, 2 + self.n_dims)]
            for field, mean, std in ((a, self.a_mean, self.a_std), (u, self.u_mean, self.u_std)):
                m, s = stats(field, dims)
                mean.copy_(m)
                std.copy_(s)
        for i, g in enumerate(grid.values()):
            self.grid_low[i], self.grid_high[i] = g.min(), g.max()
        self.normaliser_fitted.fill_(True)

    def batch(self, problem: OperatorData, step: int, seed: int) -> dict[str, Tensor]:
        """Pairs ``step`` draws: ``{"a": [batch_size, C_in, *S], "u": [batch_size, C_out, *S],
        "grid/<name>": [S_i]}``.

        Epoch ``e = step // (n_train // batch_size)`` visits the train split in the order of a
        permutation drawn from a generator seeded by ``(seed, e)``, so a batch depends on
        ``(step, seed)`` only and a resumed run sees the same batches. The
        ``n_train % batch_size`` pairs left over by an epoch's permutation are skipped that epoch.
        """
        self.fit_normaliser(problem)
        a, u, grid = self._data(problem, "train")
        per_epoch = self.n_train // self.batch_size
        epoch, k = divmod(step, per_epoch)
        if self._permutation is None or self._permutation[0] != (seed, epoch):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            self._permutation = (seed, epoch), torch.randperm(self.n_train, generator=generator)
        index = self._permutation[1][k * self.batch_size:(k + 1) * self.batch_size].to(a.device)
        return {"a": a[index], "u": u[index], **{f"grid/{name}": g for name, g in grid.items()}}

    def shard(self, batch: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
        """Disjoint samples per rank (a distributed sampler's split of the permuted batch);
        the grid is the same for all."""
        return {k: v if k.startswith("grid/") else v[rank::world] for k, v in batch.items()}

    def loss(self, problem: OperatorData, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``data``: mean over the batch of the per-sample relative L2 error in the problem's
        units (Li et al. 2021); autoregressive, summed over the snapshots of the rollout, each
        with its own relative error, as Li et al. train FNO-2D."""
        grid = {k[len("grid/"):]: v for k, v in batch.items() if k.startswith("grid/")}
        prediction = self(batch["a"], grid or None)
        step = self.step if self.autoregressive else self.out_channels
        shape = (prediction.shape[0], -1, step * prediction[0, 0].numel())  # [B, snapshots, step*S]
        errors = relative_l2(prediction.reshape(shape), batch["u"].reshape(shape))  # [B, snapshots]
        return {"data": errors.sum(1).mean()}

    @torch.no_grad()
    def evaluate(self, problem: OperatorData, resolution: int | None = None, split: str = "test") -> Evaluation:
        """Predict ``split`` (``val`` while training, ``test`` in ``sciml eval``) at
        ``resolution`` (default: the model's, else the problem's).

        Metrics: ``rel_l2`` (mean per-sample relative L2, the validation metric),
        ``rel_l2_median``, ``rel_l2_max``, ``max_abs`` and ``rmse`` over all entries, and for
        outputs of several snapshots (the problem's ``step_channels``) ``rel_l2_last_step``, the
        error of the last one. The per-sample errors ``[n_test]`` are ``per_sample`` of the
        result and, on the CPU, :attr:`last_errors`; the per-snapshot errors ``per_step``. ``prediction`` and ``reference`` are ``[n_test, C_out, *S]``.
        """
        self.fit_normaliser(problem)
        a, u, grid = self._data(problem, split, resolution)
        prediction = torch.cat([self(a[i:i + self.batch_size], grid) for i in range(0, len(a), self.batch_size)])
        errors = relative_l2(prediction.flatten(1).double(), u.flatten(1).double())
        diff = (prediction - u).double()
        metrics = {
            "rel_l2": errors.mean().item(),
            "rel_l2_median": errors.quantile(0.5).item(),
            "rel_l2_max": errors.max().item(),
            "max_abs": diff.abs().max().item(),
            "rmse": diff.pow(2).mean().sqrt().item(),
        }
        self.last_errors = errors.cpu()
        per_step = None
        step = getattr(problem, "step_channels", None)
        if step and self.out_channels > step and self.out_channels % step == 0:
            shape = (len(u), self.out_channels // step, -1)  # [N, snapshots, step * S]
            per_step = relative_l2(prediction.reshape(shape).double(), u.reshape(shape).double()).mean(0)
            metrics["rel_l2_last_step"] = per_step[-1].item()
        return Evaluation(metrics, prediction, u, grid, per_sample=errors, per_step=per_step)

    def figures(self, problem: OperatorData, evaluation: Evaluation, title: str) -> dict[str, Any]:
        """The best, median and worst test samples (the last output channel: for snapshots, the
        latest time), the histogram of per-sample errors, and for rollouts the error per snapshot."""
        from .. import plotting

        errors = evaluation.per_sample.detach().cpu()
        if errors.numel() < 2:
            return super().figures(problem, evaluation, title)
        order = torch.argsort(errors)
        shown = f" (last of {self.out_channels} output channels)" if self.out_channels > 1 else ""
        figures = {}
        for label, i in {"best": order[0], "median": order[len(order) // 2], "worst": order[-1]}.items():
            figures[f"{label}_sample"] = plotting.comparison_figure(
                evaluation.grid, evaluation.prediction[i], evaluation.reference[i],
                title=f"{title}: {label} test sample {int(i)}, rel-L2 {errors[i]:.2e}{shown}")
        figures["histogram"] = plotting.histogram_figure(errors, "relative L2 error per test sample")
        if evaluation.per_step is not None:
            figures["per_step"] = plotting.rollout_figure(evaluation.per_step, "output snapshot")
        return figures

    def surrogate(self, problem: OperatorData, solution: Solution, batch_size: int | None = None
                  ) -> tuple[Callable[[], Tensor], Tensor, dict[str, Any]]:
        """Predict ``u`` from ``a`` of the solver's output, in batches (default: the training
        batch size)."""
        a, u = problem.operator_fields(solution)
        dtype = next(self.parameters()).dtype
        a, u = a.to(dtype), u.to(dtype)
        # the spatial axes: a solver's grid may also have time (t, x, y)
        grid = {k: g.to(dtype) for k, g in list(solution.grid.items())[-self.n_dims:]}
        batch = batch_size or self.batch_size

        def predict() -> Tensor:
            with torch.no_grad():
                return torch.cat([self(a[i:i + batch], grid) for i in range(0, len(a), batch)])

        return predict, u, {"batch_size": int(batch)}

    def surrogate_resolution(self, problem: OperatorData) -> int | None:
        return self.resolution or problem.resolution
