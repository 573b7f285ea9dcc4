"""Typical users: cluster users by the text of what they interacted with, keep one per cluster.

Only typical users are sent to the LLM; every other user inherits its typical user's
interests (as in the official EIMF code, where typical users are Affinity Propagation
exemplars). Both methods aim at a share of users (``typical_ratio``, default 5 %):

- ``kmeans``: that many clusters; each cluster's typical user is the member closest to its
  centre.
- ``ap`` (Affinity Propagation, as in the official code): the official fixed preference does not
  transfer across encoders (with normalised MiniLM vectors it yields a handful of clusters), so
  the preference is searched over quantiles of the similarities until the cluster count lands
  near the target. AP needs O(n^2) memory: past ``ap_max_users`` users it runs on a random
  sample, still aiming at ``typical_ratio`` of *all* users, and assigns the others to the
  nearest exemplar, and says so. Where that share is the whole sample or more, every sampled
  user is an exemplar (AP's answer at a preference above every similarity), with a warning.
"""

import warnings
from dataclasses import dataclass, field
from logging import getLogger

import numpy as np


@dataclass
class TypicalUsers:
    """The chosen typical users and every user's typical user (indices into ``users``)."""

    users: list  # user tokens, in the order of the vectors clustered
    exemplars: list  # indices of typical users
    assignment: np.ndarray  # for each user, the index of its typical user
    method: str
    details: dict = field(default_factory=dict)

    def mapping(self):
        """``{user token: typical user token}``."""
        return {u: self.users[self.assignment[i]] for i, u in enumerate(self.users)}

    @property
    def typical_tokens(self):
        return [self.users[i] for i in self.exemplars]


def target_clusters(n_users, typical_ratio):
    if not 0 < typical_ratio <= 1:
        raise ValueError(f"typical_ratio must be in (0, 1], got {typical_ratio}")
    return max(1, min(n_users, int(round(typical_ratio * n_users))))


def _nearest(vectors, centres):
    """Index of the nearest centre (squared Euclidean, in float64) for every vector, in blocks
    (each block made float64 on its own, so float32 vectors are never copied whole)."""
    result = np.empty(len(vectors), dtype=np.int64)
    centres = np.asarray(centres, dtype=np.float64)
    centre_sq = (centres * centres).sum(axis=1)
    for start in range(0, len(vectors), 4096):  # rows made on demand are made a block at a time
        block = np.asarray(vectors[start : start + 4096], dtype=np.float64)
        distances = centre_sq[None, :] - 2.0 * block @ centres.T
        result[start : start + 4096] = distances.argmin(axis=1)
    return result


def _every_row(vectors, chunk=65536):
    """All rows in float64 (k-means needs them at once), rows made on demand a chunk at a time."""
    if isinstance(vectors, np.ndarray):
        return vectors.astype(np.float64)
    rows = np.empty(vectors.shape, dtype=np.float64)
    for start in range(0, len(vectors), chunk):
        rows[start : start + chunk] = vectors[start : start + chunk]
    return rows


def kmeans_typical(vectors, n_clusters, seed):
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(vectors)
    exemplars = []
    for cluster in range(n_clusters):
        members = np.flatnonzero(model.labels_ == cluster)
        if len(members) == 0:
            continue
        offsets = ((vectors[members] - model.cluster_centers_[cluster]) ** 2).sum(axis=1)
        exemplars.append(int(members[offsets.argmin()]))
    return exemplars


def _affinity_propagation(similarity, preference, seed):
    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    model = AffinityPropagation(
        affinity="precomputed",
        damping=0.8,
        max_iter=500,
        convergence_iter=15,
        preference=preference,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(similarity)
    return [int(i) for i in model.cluster_centers_indices_]


def ap_typical(vectors, n_clusters, seed, searches=12):
    """AP exemplars with the preference searched so that their count is near ``n_clusters``."""
    similarity = -(
        (vectors * vectors).sum(1)[:, None]
        - 2.0 * vectors @ vectors.T
        + (vectors * vectors).sum(1)[None, :]
    )
    off_diagonal = similarity[~np.eye(len(vectors), dtype=bool)]
    low, high = 0.0, 1.0  # quantiles of the similarities: higher preference, more clusters
    best, best_gap, best_quantile = None, None, None
    for _ in range(searches):
        quantile = (low + high) / 2
        exemplars = _affinity_propagation(
            similarity, float(np.quantile(off_diagonal, quantile)), seed
        )
        count = len(exemplars)
        gap = abs(count - n_clusters)
        if count and (best_gap is None or gap < best_gap):
            best, best_gap, best_quantile = exemplars, gap, quantile
        if count and gap <= max(1, n_clusters // 10):
            break
        if count < n_clusters:
            low = quantile
        else:
            high = quantile
    return best, best_quantile


def _all_sampled(rows, n_clusters, n_users):
    """When the target is the whole sample (its ``rows``), AP's answer is known without a fit:
    with a preference above every similarity each user is its own exemplar. (The preference
    search could only approach it, with its 12 fits of 3,000 x 3,000 at 1M users.) Users with
    the same vector (short histories of the same items) count once, by their first: a copy
    would be sent to the LLM with nobody joining it."""
    if len(rows) < n_users:
        getLogger().warning(
            f"{n_clusters} typical users are wanted but affinity propagation clusters "
            f"{len(rows)} users (ap_max_users): every one of them is typical and the others "
            "join their nearest; raise ap_max_users (memory grows with its square) or use "
            "typical_selection: kmeans to reach the share."
        )
    _, first = np.unique(np.asarray(rows), axis=0, return_index=True)
    return sorted(int(i) for i in first)


def select_typical_users(
    users, vectors, method="ap", typical_ratio=0.05, max_ap_users=3000, seed=2020
):
    """Cluster users (rows of ``vectors``) and pick typical users; see the module docstring.

    ``vectors``: an array, or rows made on demand (``vectors[index]`` for an index array or a
    slice, with ``dtype``, e.g. ``interests.UserTextVectors``): AP then reads its sample and
    blocks of the assignment, never every row at once. Computed in float64; float32 rows are
    converted a part at a time, as a 1M x 384 float64 copy alone would take 3 GB."""
    if not hasattr(vectors, "dtype"):  # a list: an array; rows made on demand stay so
        vectors = np.asarray(vectors)
    if isinstance(vectors, np.ndarray) and vectors.dtype != np.float32:
        vectors = vectors.astype(np.float64)
    n_clusters = target_clusters(len(users), typical_ratio)
    details = {"target_clusters": n_clusters, "users": len(users)}
    if method == "kmeans":
        exemplars = kmeans_typical(_every_row(vectors), n_clusters, seed)
    elif method == "ap":
        sample = np.arange(len(users))
        if len(users) > max_ap_users:
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(len(users), size=max_ap_users, replace=False))
            getLogger().info(
                f"Affinity propagation on a random sample of {max_ap_users} of {len(users)} users "
                "(ap_max_users); the others join their nearest exemplar."
            )
            details["ap_sample"] = int(max_ap_users)
        # the share is of all users, not of the sample: a sample of 3,000 of ml-1m's 6,040
        # users must still give about 5 % of 6,040 typical users
        if n_clusters >= len(sample):
            found, quantile = _all_sampled(vectors[sample], n_clusters, len(users)), None
            details["every_sampled_user_typical"] = True
        else:
            found, quantile = ap_typical(
                np.asarray(vectors[sample], dtype=np.float64), n_clusters, seed
            )
        if not found:
            getLogger().warning("Affinity propagation found no exemplars; using k-means instead.")
            exemplars = kmeans_typical(_every_row(vectors), n_clusters, seed)
            method = "kmeans"
        else:
            exemplars = [int(sample[i]) for i in found]
            if quantile is not None:
                details["preference_quantile"] = quantile
    else:
        raise ValueError(f"typical_selection must be 'ap' or 'kmeans', got '{method}'")
    assignment = np.asarray(exemplars)[_nearest(vectors, vectors[exemplars])]
    details["clusters"] = len(exemplars)
    return TypicalUsers(list(users), exemplars, assignment, method, details)
