"""RecBole's graph models build their adjacency with ``dok_matrix._update``, which scipy >= 1.13
removed; ``compat.apply`` restores it (issue 27). LightGCN must train and build the matrix
RecBole intends: the symmetric normalisation of the user-item bipartite graph."""

import numpy as np
import scipy.sparse as sp
import torch

from recbole_llm.config import Config
from recbole_llm.data.utils import data_preparation
from recbole_llm.quick_start import create_dataset, run_recbole_llm
from recbole_llm.registry import get_model


def test_lightgcn_builds_the_normalised_bipartite_adjacency(fast_config):
    config = Config(model="LightGCN", dataset="synth", config_dict=fast_config)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("LightGCN")(config, train._dataset)
    inter = train._dataset.inter_matrix(form="coo").astype(np.float32)
    n_users, n = inter.shape[0], inter.shape[0] + inter.shape[1]
    rows = np.concatenate([inter.row, inter.col + n_users])
    cols = np.concatenate([inter.col + n_users, inter.row])
    adjacency = sp.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    adjacency = adjacency.tocsr()
    adjacency.data[:] = 1  # duplicate interactions count once, as RecBole's dict does
    degree = np.asarray(adjacency.sum(axis=1)).ravel() + 1e-7
    scale = sp.diags(degree**-0.5)
    expected = (scale @ adjacency @ scale).toarray()
    assert np.allclose(model.norm_adj_matrix.to_dense().numpy(), expected, atol=1e-6)


def test_lightgcn_trains_through_our_entry_point(fast_config):
    result = run_recbole_llm(
        model="LightGCN",
        dataset="synth",
        config_dict=dict(fast_config, train_neg_sample_args={"distribution": "uniform"}),
        saved=False,
    )
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in result["test_result"].values())
    assert torch.isfinite(torch.tensor(result["best_valid_score"]))
