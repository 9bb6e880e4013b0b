"""ROUGE-1/2/L F-measure (rouge_score, Porter stemmer), mean and per answer (empty texts: see metrics.empty)."""

import datasets
import evaluate
from rouge_score import rouge_scorer

from kaggle_qa.metrics.empty import empty_counts, score_pairs

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class QaRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L F1 between each prediction and its reference (stemmed).",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description="predictions, references: lists of strings.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
        per_item = {
            name: score_pairs(
                predictions, references, lambda ps, rs, name=name: [scorer.score(r, p)[name].fmeasure for p, r in zip(ps, rs)]
            )
            for name in ROUGE_TYPES
        }
        result = {name: _mean(values) for name, values in per_item.items()}
        return {**result, **empty_counts(predictions, references), "per_item": per_item}


def _mean(values):
    return sum(values) / len(values) if values else 0.0
