"""Evaluation plots (matplotlib PNGs) written beside metrics.json."""

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

NUM_BUCKETS = 10


def _hit_rate_curves(result: dict[str, Any], path: str) -> None:
    sets = {"logged eval clicks": result["methods"]}
    if "random_exposure" in result:
        sets["random exposure"] = result["random_exposure"]["methods"]
    figure, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False)
    for axis, (title, methods) in zip(axes[0], sets.items(), strict=True):
        for method, values in methods.items():
            axis.plot(
                result["ks"],
                [values[f"hit_rate@{k}"] for k in result["ks"]],
                marker="o",
                label=method,
            )
        axis.set(title=f"HitRate@K, {title}", xlabel="K", ylabel="HitRate@K", xscale="log")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def popularity_buckets(ranked: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Share of recommendations per item-popularity decile (0 = most popular items)."""
    order = np.argsort(-popularity, kind="stable")
    bucket_of = np.empty(len(popularity), dtype=np.int64)
    bucket_of[order] = np.arange(len(popularity)) * NUM_BUCKETS // len(popularity)
    counts = np.bincount(bucket_of[ranked[ranked >= 0]], minlength=NUM_BUCKETS)
    return counts / max(counts.sum(), 1)


def _popularity_picture(
    rankings: dict[str, np.ndarray], popularity: np.ndarray, k: int, path: str
) -> None:
    order = np.argsort(-popularity, kind="stable")
    bucket_of = np.arange(len(popularity)) * NUM_BUCKETS // len(popularity)
    train_share = np.bincount(bucket_of, weights=popularity[order], minlength=NUM_BUCKETS)
    train_share = train_share / max(train_share.sum(), 1)
    figure, axis = plt.subplots(figsize=(7, 4))
    x = np.arange(NUM_BUCKETS)
    axis.plot(x, train_share, "k--", marker="s", label="training clicks")
    for method, ranked in rankings.items():
        axis.plot(x, popularity_buckets(ranked[:, :k], popularity), marker="o", label=method)
    axis.set(
        title=f"Top-{k} recommendations per item-popularity decile",
        xlabel="item popularity decile (0 = most clicked in training)",
        ylabel="share of items shown (symlog)",
    )
    # symlog: empty deciles (share 0) stay on the chart, unlike a log axis.
    axis.set_yscale("symlog", linthresh=1e-3)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_evaluation(
    result: dict[str, Any],
    rankings: dict[str, dict[str, np.ndarray]],
    popularity: np.ndarray,
    directory: str,
) -> list[str]:
    """Writes hit_rate_at_k.png and popularity_buckets.png; returns their paths."""
    paths = [
        os.path.join(directory, "hit_rate_at_k.png"),
        os.path.join(directory, "popularity_buckets.png"),
    ]
    _hit_rate_curves(result, paths[0])
    _popularity_picture(rankings["logged"], popularity, max(result["ks"]), paths[1])
    return paths
