r"""
ComiRecSA
################################################

Reference:
    Yukuo Cen et al. "Controllable Multi-Interest Framework for Recommendation." in KDD 2020.

Reference code:
    https://github.com/THUDM/ComiRec
"""

from recbole_llm.model.abstract_recommender import MultiInterestRecommender
from recbole_llm.model.layers import SelfAttentiveExtractor


class ComiRecSA(MultiInterestRecommender):
    r"""ComiRec-SA: K attention heads over the sequence, each head one interest.

    Training reads out the interest closest to the target item; inference scores each item by
    its best-matching interest.
    """

    def build_extractor(self, config):
        return SelfAttentiveExtractor(
            self.hidden_size,
            self.interest_num,
            self.max_seq_length,
            add_position=config["add_position"],  # positional embedding in the attention
        )
