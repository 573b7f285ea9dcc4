r"""
REMI
################################################

Reference:
    Yueqi Xie et al. "Rethinking Multi-Interest Learning for Candidate Matching in Recommender
    Systems." in RecSys 2023.

Reference code:
    https://github.com/Tokkiu/REMI
"""

from recbole_llm.model.abstract_recommender import MultiInterestRecommender
from recbole_llm.model.layers import SelfAttentiveExtractor, sampled_softmax_loss


class REMI(MultiInterestRecommender):
    r"""REMI: ComiRec-SA trained with routing regularisation and interest-aware hard negatives.

    Routing regularisation penalises the variance of each interest's attention over positions
    (the squared diagonal of the attention covariance divided by ``hidden_size``), so that no
    interest collapses onto a single item. It is averaged over the batch here (the reference code
    sums it), so ``reg_weight`` does not depend on the batch size: the default 12800 equals the
    reference code's 100 at its batch size of 128.

    Interest-aware hard negative mining (``hard_negative_beta`` > 0) re-weights the sampled
    negatives of the sampled softmax by ``softmax(beta * score)``; it needs ``loss_type: SSM``.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.reg_weight = config["reg_weight"]  # routing regularisation weight (batch mean)
        self.hard_negative_beta = config["hard_negative_beta"]  # 0 = plain sampled softmax
        if self.hard_negative_beta and self.loss_type != "SSM":
            raise ValueError(
                "hard_negative_beta re-weights sampled negatives, so it needs loss_type: SSM "
                f"(got loss_type: {self.loss_type}); set hard_negative_beta: 0 for CE."
            )

    def build_extractor(self, config):
        return SelfAttentiveExtractor(
            self.hidden_size, self.interest_num, self.max_seq_length, add_position=True
        )

    def recommendation_loss(self, user_emb, target_items):
        if self.loss_type == "SSM":
            return sampled_softmax_loss(
                user_emb,
                self.item_embedding.weight,
                target_items,
                self.sample_num,
                beta=self.hard_negative_beta,
            )
        return super().recommendation_loss(user_emb, target_items)

    def regularization(self, interests):
        if not self.reg_weight:
            return None
        attention = interests.routing
        centred = attention - attention.mean(dim=2, keepdim=True)
        variance = (centred * centred).sum(dim=2) / self.hidden_size
        return self.reg_weight * (variance * variance).sum(dim=1).mean()
