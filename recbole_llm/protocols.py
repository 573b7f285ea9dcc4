"""The evaluation protocols' definitions that both the dataset layer (which splits by them) and
the semantic step (which must prompt only what trains) read: ``eval_protocol``'s values and the
ComiRec protocol's user split. The protocols themselves are in ``data/evaluation.py``."""

import numpy as np

#: ``eval_protocol`` values: RecBole's split (default) and EIMF's ComiRec protocol.
PROTOCOLS = ("recbole", "comirec")
#: The seed of the ComiRec protocol's user shuffle (ComiRec's preprocessing uses 1230).
COMIREC_SPLIT_SEED = 1230
#: Shares of users for training and validation; the rest are test users.
COMIREC_USER_SHARES = (0.8, 0.1)


def comirec_user_parts(n_users):
    """Positions (in user id order, among users with at least one sample) of the ComiRec
    protocol's training, validation and test users: shuffled with its seed, split 8:1:1."""
    shuffled = np.random.default_rng(COMIREC_SPLIT_SEED).permutation(n_users)
    cuts = [int(share * n_users) for share in np.cumsum(COMIREC_USER_SHARES)]
    return np.split(shuffled, cuts)
