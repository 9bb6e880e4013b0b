"""BLEU (sacrebleu): corpus BLEU over all answers, plus sentence BLEU per answer (0-100)."""

import datasets
import evaluate
import sacrebleu

from kaggle_qa.metrics.empty import empty_counts, score_pairs


class QaBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="sacrebleu corpus BLEU (one reference per prediction) and per-answer sentence BLEU.",
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description="predictions, references: lists of strings.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        corpus = sacrebleu.corpus_bleu(list(predictions), [list(references)])
        per_item = score_pairs(
            predictions, references,
            lambda ps, rs: [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(ps, rs)],
            maximum=100.0,
        )
        return {"bleu": corpus.score, **empty_counts(predictions, references), "per_item": {"sentence_bleu": per_item}}
