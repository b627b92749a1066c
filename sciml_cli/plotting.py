"""Figures of solutions and predictions (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _squeezed(grid: dict[str, Tensor], *fields: np.ndarray) -> tuple[dict[str, Tensor], list[np.ndarray]]:
    """Grid axes of length 1 (a slice through a higher-dimensional domain) dropped from the grid
    and from the trailing axes of the fields."""
    keep = [k for k, v in grid.items() if len(v) > 1]
    if len(keep) == len(grid):
        return grid, list(fields)
    shape = [len(grid[k]) for k in keep]
    return {k: grid[k] for k in keep}, [f.reshape(*f.shape[:f.ndim - len(grid)], *shape) for f in fields]


def _last_slice(grid: dict[str, Tensor], field: np.ndarray) -> tuple[dict[str, Tensor], np.ndarray, str]:
    """A space-time field in 2D ([..., T, X, Y] on (t, x, y)) is shown at its last time."""
    if len(grid) < 3:
        return grid, field, ""
    names = list(grid)
    t = grid[names[0]]
    return {k: grid[k] for k in names[1:]}, field[..., -1, :, :], f" ({names[0]} = {float(t[-1]):.3g})"


def _leading_stripped(field: np.ndarray, n_coords: int) -> np.ndarray:
    """Drop leading sample/channel axes, keeping the last entry of each (for snapshot channels
    the latest time), so that ``n_coords`` grid axes remain; with one coordinate a trailing axis
    may hold components (``[T, 2]``) and is kept."""
    keep = n_coords + (1 if n_coords == 1 and field.ndim > 1 and field.shape[-1] <= 4 and field.ndim > n_coords else 0)
    while field.ndim > max(keep, n_coords):
        field = field[-1]
    return field


def _panel(ax, grid: dict[str, Tensor], field: np.ndarray, title: str, cmap: str = "RdBu_r",
           limits: tuple[float, float] | None = None):
    names = list(grid)
    if field.ndim == 1 or len(names) == 1:
        # one coordinate: a trailing axis beyond it holds components (e.g. prey, predator)
        ax.plot(_np(grid[names[0]]), field)
        ax.set_xlabel(names[0])
        if field.ndim == 2:
            ax.legend([f"component {i}" for i in range(field.shape[1])])
    else:
        # axis 0 of ``field`` runs along the first grid coordinate: draw it horizontally
        a, b = _np(grid[names[0]]), _np(grid[names[1]])
        vmin, vmax = limits if limits is not None else (None, None)
        im = ax.imshow(field.T, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                       extent=[a[0], a[-1], b[0], b[-1]])
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.figure.colorbar(im, ax=ax)
    ax.set_title(title)


def comparison_figure(grid: dict[str, Tensor], prediction: Tensor, reference: Tensor, title: str = ""):
    """Reference, prediction and absolute error side by side."""
    grid, (prediction, reference) = _squeezed(grid, _np(prediction), _np(reference))
    _, pred, _ = _last_slice(grid, prediction)
    grid, ref, when = _last_slice(grid, reference)
    pred, ref = _leading_stripped(pred, len(grid)), _leading_stripped(ref, len(grid))
    title += when
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    limits = (float(np.nanmin(ref)), float(np.nanmax(ref)))  # one colour scale, so the panels compare
    _panel(axes[0], grid, ref, "reference", limits=limits)
    _panel(axes[1], grid, pred, "prediction", limits=limits)
    _panel(axes[2], grid, np.abs(pred - ref), "|error|", cmap="magma")
    if title:
        fig.suptitle(title)
    return fig


def field_figure(grid: dict[str, Tensor], field: Tensor, title: str = ""):
    grid, (field,) = _squeezed(grid, _np(field))
    grid, f, when = _last_slice(grid, field)
    f = _leading_stripped(f, len(grid))
    title += when
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _panel(ax, grid, f, title)
    return fig


def slices_figure(grid: dict[str, Tensor], prediction: Tensor, reference: Tensor,
                  fractions: Sequence[float] = (0.25, 0.5, 0.75), title: str = ""):
    """Prediction against reference along the first coordinate at a few values of the second
    (for ``(x, t)`` fields ``[X, T]``: slices in time, as Raissi et al. 2019 show Burgers)."""
    (xname, x), (tname, t) = list(grid.items())[:2]
    x, t, pred, ref = _np(x), _np(t), _np(prediction), _np(reference)
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.2 * len(fractions), 3.4), constrained_layout=True,
                             sharey=True)
    for ax, f in zip(np.atleast_1d(axes), fractions):
        k = int(np.argmin(np.abs(t - (t[0] + f * (t[-1] - t[0])))))
        ax.plot(x, ref[:, k], "b-", lw=2, label="reference")
        ax.plot(x, pred[:, k], "r--", lw=2, label="prediction")
        ax.set_title(f"{tname} = {t[k]:.2f}")
        ax.set_xlabel(xname)
    np.atleast_1d(axes)[0].legend()
    if title:
        fig.suptitle(title)
    return fig


def histogram_figure(values: Tensor, xlabel: str):
    v = _np(values).ravel()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    positive = v[v > 0]
    if positive.size and positive.max() / positive.min() > 20:  # errors spanning decades
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 30)
        ax.set_xscale("log")
    else:
        bins = 30
    ax.hist(v, bins=bins)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return fig


def rollout_figure(errors: Tensor, xlabel: str = "rollout step"):
    """Mean relative L2 error of each predicted snapshot, on a log scale."""
    e = _np(errors).ravel()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.semilogy(np.arange(1, e.size + 1), e, marker="o", markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean relative L2 error")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def trajectory_figure(data, curves: dict[str, Tensor], state_names: Sequence[str], title: str = ""):
    """One panel per state: observations, the truth over the fit and extrapolation windows, and
    each model's trajectory (``[T + T2, S]`` on the same times); the window's end dashed."""
    t = np.concatenate([_np(data.t), _np(data.t_extrapolate)])
    truth = np.concatenate([_np(data.truth[0]), _np(data.truth_extrapolate[0])])
    obs = _np(data.observed[0])
    n = len(state_names)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.6 * n), sharex=True, constrained_layout=True, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[:, 0], state_names)):
        ax.plot(t, truth[:, i], color="black", lw=1.2, label="truth")
        ax.plot(_np(data.t), obs[:, i], "o", ms=3, color="grey", label="data")
        for label, curve in curves.items():
            ax.plot(t, _np(curve)[:, i], "--", lw=1.5, label=label)
        ax.axvline(float(data.t[-1]), color="grey", lw=0.8, ls=":")
        ax.set_ylabel(name)
        finite = truth[:, i]
        pad = 0.25 * (finite.max() - finite.min())
        ax.set_ylim(finite.min() - pad, finite.max() + pad)  # a diverging fit does not flatten the truth
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("t (dotted: end of the data)")
    if title:
        fig.suptitle(title)
    return fig


def term_figure(t: Tensor, learned: Tensor, true: Tensor, state_names: Sequence[str], title: str = ""):
    """The network's term against the true missing term along the true trajectory, per state."""
    n = len(state_names)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.4 * n), sharex=True, constrained_layout=True, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[:, 0], state_names)):
        ax.plot(_np(t), _np(true)[:, i], color="black", label="true missing term")
        ax.plot(_np(t), _np(learned)[:, i], "--", label="network")
        ax.set_ylabel(f"d{name}/dt term")
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("t")
    if title:
        fig.suptitle(title)
    return fig


def reconstruction_figure(truth: Tensor, reconstructions: dict[str, Tensor], scores: dict[str, float],
                          title: str = ""):
    """The ground-truth image and each reconstruction side by side on one grey scale (that of
    the truth), each titled with its PSNR (dB). Images ``[S, S]`` with axis -2 along ``x``."""
    panels = {"ground truth": truth, **reconstructions}
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), constrained_layout=True,
                             squeeze=False)
    lo, hi = float(truth.min()), float(truth.max())
    for ax, (name, img) in zip(axes[0], panels.items()):
        ax.imshow(_np(img).T, origin="lower", extent=(-1, 1, -1, 1), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name if name not in scores else f"{name}\n{scores[name]:.2f} dB", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def curves_figure(x: Tensor, curves: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str = "",
                  ceiling: float | None = None):
    """One curve per name against ``x`` on a log scale (e.g. each method's error over a rollout).

    ``ceiling``: the top of the axis when a curve passes it (a diverged rollout's error grows to
    1e30 and would flatten every other curve); the curve leaves the plot there."""
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    top = 0.0
    for name, values in curves.items():
        y = np.asarray(values, dtype=float)
        ax.semilogy(_np(x), y, label=name)
        top = max(top, float(y[np.isfinite(y)].max(initial=0.0)))
    if ceiling is not None and top > ceiling:
        ax.set_ylim(top=ceiling)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def snapshots_figure(rows: dict[str, Tensor], times: Sequence[float], title: str = ""):
    """States at a few times, one column per time: in 1D (``[T, X]`` per name) every name in the
    same panel; in 2D (``[T, X, Y]``) one row per name on the colour scale of the first."""
    first = next(iter(rows.values()))
    two_d = first.ndim == 3
    n_rows = len(rows) if two_d else 1
    fig, axes = plt.subplots(n_rows, len(times), figsize=(2.8 * len(times), 2.6 * n_rows + 0.4 if two_d else 3.6),
                             constrained_layout=True, squeeze=False)
    limit = float(first.abs().max())
    for j, t in enumerate(times):
        for i, (name, states) in enumerate(rows.items()):
            if two_d:
                ax = axes[i, j]
                ax.imshow(_np(states[j]).T, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r",
                          vmin=-limit, vmax=limit)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name}, t = {t:.3g}", fontsize=8)
            else:
                ax = axes[0, j]
                n = states.shape[-1]
                ax.plot(np.arange(n) / n, _np(states[j]), label=name, lw=1.2)
                ax.set_title(f"t = {t:.3g}", fontsize=9)
                ax.set_xlabel("x")
    if not two_d:
        axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def sweep_figure(key: str, values: Sequence[str | None], metrics: Sequence[float], ylabel: str,
                 maximize: bool = False, title: str = ""):
    """A sweep's metric against one swept key: a scatter over numbers (log axis where they span
    a decade or more), or over the categories in their order of first appearance; the best job
    (lowest, or highest with ``maximize``) starred."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    y = np.asarray(metrics, dtype=float)
    try:
        x = np.asarray([float(v) for v in values])
        labels = None
        if (x > 0).all() and x.max() >= 10 * x.min():
            ax.set_xscale("log")
    except (TypeError, ValueError):  # categories (a choice of names)
        labels = list(dict.fromkeys(str(v) for v in values))
        x = np.asarray([labels.index(str(v)) for v in values], dtype=float)
        ax.set_xticks(range(len(labels)), labels)
    order = np.argsort(x, kind="stable")
    ax.plot(x[order], y[order], color="tab:blue", alpha=0.35, lw=1.5)  # the trend, jobs in order of the key
    ax.scatter(x, y, s=40, color="tab:blue", label="jobs")
    best = int(np.argmax(y) if maximize else np.argmin(y))
    ax.scatter(x[best:best + 1], y[best:best + 1], s=160, marker="*", color="tab:red", label="best", zorder=3)
    ax.axhline(y[best], color="tab:red", lw=1.5, ls="--", alpha=0.6)
    ax.legend(fontsize=8)
    if (y > 0).all() and y.max() >= 10 * y.min():
        ax.set_yscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def loss_figure(history: Sequence[Sequence[float]]):
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    if history:
        h = np.asarray(history, dtype=float)
        ax.plot(h[:, 0], h[:, 1])
        # an energy (Deep Ritz) goes negative: a symmetric log scale then, linear near zero
        ax.set_yscale("log" if (h[:, 1] > 0).all() else "symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("total loss")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def save(fig, path: Path) -> Path:
    from .training.checkpoint import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110))
    plt.close(fig)
    return path
