"""Accuracy of the normalised first word ("True." == "true,"), as BoolQ's exact match."""

import datasets
import evaluate

from kaggle_qa.qa_schema import first_word


class FirstWordAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=(
                "1 when the first word of the prediction, lower-cased without punctuation, "
                "equals the reference's; the mean is the accuracy."
            ),
            citation="",
            inputs_description="predictions, references: lists of strings.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        correct = [
            float(first_word(p) == first_word(r) and first_word(r) != "")
            for p, r in zip(predictions, references)
        ]
        return {
            "accuracy": sum(correct) / len(correct) if correct else 0.0,
            "per_item": {"correct": correct},
        }
