r"""
MIND
################################################

Reference:
    Chao Li et al. "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall."
    in CIKM 2019.

Reference code:
    https://github.com/THUDM/ComiRec (MIND baseline), https://github.com/Tokkiu/REMI
"""

import torch

from recbole_llm.model.abstract_recommender import MultiInterestRecommender
from recbole_llm.model.layers import CapsuleRoutingExtractor


class MIND(MultiInterestRecommender):
    r"""MIND: behaviour-to-interest (B2I) dynamic routing with label-aware attention.

    One bilinear map ``S`` is shared by all behaviours and interests; the routing logits start
    from a fixed N(0, 1) draw, which is what separates the interests. With
    ``dynamic_interest_num`` a user with ``n`` items gets ``max(1, min(K, floor(log2 n)))``
    interests, as in the paper. Training uses label-aware attention: ``readout: soft`` with
    power ``readout_pow``, or ``hard`` (the limit of a large power).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dynamic_interest_num = config["dynamic_interest_num"]  # K_u = log2(n_u), capped

    def build_extractor(self, config):
        return CapsuleRoutingExtractor(
            self.hidden_size,
            self.interest_num,
            self.max_seq_length,
            bilinear="shared",
            routing_times=config["routing_times"],  # routing iterations
            random_logits=True,
            relu_layer=config["capsule_relu"],  # Linear + ReLU on each interest
        )

    def active_interests(self, item_seq_len):
        if not self.dynamic_interest_num:
            return None
        lengths = item_seq_len.clamp_min(1).float()
        per_user = torch.floor(torch.log2(lengths)).long().clamp(1, self.interest_num)
        interests = torch.arange(self.interest_num, device=item_seq_len.device)
        return interests.unsqueeze(0) < per_user.unsqueeze(1)
