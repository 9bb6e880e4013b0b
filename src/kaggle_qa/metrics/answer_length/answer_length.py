"""Answer length in words against the reference: means and the per-answer ratio."""

import datasets
import evaluate


class AnswerLength(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Words per prediction and per reference, and prediction/reference length ratio.",
            citation="",
            inputs_description="predictions, references: lists of strings.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        predicted = [len(text.split()) for text in predictions]
        expected = [len(text.split()) for text in references]
        ratio = [p / max(e, 1) for p, e in zip(predicted, expected)]
        return {
            "answer_words": _mean(predicted),
            "reference_words": _mean(expected),
            "length_ratio": _mean(ratio),
            "per_item": {"answer_words": predicted, "reference_words": expected, "length_ratio": ratio},
        }


def _mean(values):
    return sum(values) / len(values) if values else 0.0
