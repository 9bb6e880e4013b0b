"""BERTScore F1 with a local encoder, by default all-MiniLM-L6-v2; empty texts by :mod:`kaggle_qa.metrics.empty`."""

import datasets
import evaluate

from kaggle_qa.metrics.empty import empty_counts, score_pairs
from kaggle_qa.retrieval import default_encoder_path


class QaBertscore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="BERTScore F1 (greedy token matching of contextual embeddings), no baseline rescaling.",
            citation="Zhang et al., BERTScore: Evaluating Text Generation with BERT, ICLR 2020.",
            inputs_description="predictions, references: lists of strings; model_path: local folder.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, model_path=None, num_layers=6, batch_size=64):
        import bert_score

        def f1(ps, rs):  # bert_score crashes on "": empty texts never reach it (metrics.empty)
            return bert_score.score(
                ps, rs, model_type=str(model_path or default_encoder_path()), num_layers=num_layers,
                batch_size=batch_size, device="cpu",
            )[2].tolist()

        scores = score_pairs(predictions, references, f1)
        return {
            "bertscore_f1": sum(scores) / len(scores) if scores else 0.0,
            **empty_counts(predictions, references),
            "per_item": {"bertscore_f1": scores},
        }
