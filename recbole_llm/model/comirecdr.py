r"""
ComiRecDR
################################################

Reference:
    Yukuo Cen et al. "Controllable Multi-Interest Framework for Recommendation." in KDD 2020.

Reference code:
    https://github.com/THUDM/ComiRec
"""

from recbole_llm.model.abstract_recommender import MultiInterestRecommender
from recbole_llm.model.layers import CapsuleRoutingExtractor


class ComiRecDR(MultiInterestRecommender):
    r"""ComiRec-DR: dynamic routing from behaviour capsules to K interest capsules.

    Each position has its own bilinear map to each interest; routing logits start at zero.
    """

    def build_extractor(self, config):
        return CapsuleRoutingExtractor(
            self.hidden_size,
            self.interest_num,
            self.max_seq_length,
            bilinear="per_position",
            routing_times=config["routing_times"],  # routing iterations
            random_logits=False,
            relu_layer=config["capsule_relu"],  # Linear + ReLU on each interest
        )
