"""The synthesis pipeline: doc_chunks → qa_v1, qa_v2, qa_v3, qa_quarantine, datasheet."""

from kedro.pipeline import Pipeline, node

from .nodes import build_datasheet, filter_candidates, generate_candidates, split_chunks
from .provenance import record_provenance


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(split_chunks, ["doc_chunks", "params:synthesis"], "synthesis_chunk_split", name="split_chunks"),
            node(
                generate_candidates,
                ["doc_chunks", "synthesis_chunk_split", "teacher_prompts", "teacher_api_key", "params:synthesis", "params:domain"],
                ["synthesis_candidates", "synthesis_teacher_report"],
                name="generate_candidates",
            ),
            node(
                filter_candidates,
                ["synthesis_candidates", "doc_chunks", "params:synthesis", "retrieval_index", "params:retrieval"],
                ["qa_v1", "qa_v2", "qa_v3", "qa_quarantine", "synthesis_filter_report"],
                name="filter_candidates",
            ),
            node(
                build_datasheet,
                [
                    "qa_v1",
                    "qa_v2",
                    "qa_v3",
                    "qa_v1_published",
                    "qa_v3_published",
                    "synthesis_filter_report",
                    "synthesis_teacher_report",
                    "synthesis_chunk_split",
                    "params:synthesis",
                    "params:domain",
                ],
                ["datasheet", "datasheet_json", "datasheet_plot"],
                name="build_datasheet",
            ),
            node(
                record_provenance,
                ["doc_chunks", "doc_chunks_versions", "qa_v1", "qa_v2", "qa_v3"],
                "qa_provenance",
                name="record_provenance",
            ),
        ]
    )
