"""The ingestion pipeline: crawl the docs site, clean the pages, chunk them for synthesis."""

from kedro.pipeline import Node, Pipeline

from kaggle_qa.retrieval import build_index

from .nodes import chunk_pages, clean_pages, crawl_docs, report_ingestion


def build_retrieval_index(doc_chunks: list[dict], retrieval: dict) -> dict:
    """Embed every chunk so the assistant can find the context for a user's question."""
    return build_index(doc_chunks, retrieval.get("encoder_path"), retrieval["batch_size"])


def create_pipeline(**kwargs) -> Pipeline:
    """crawl_docs → clean_pages → chunk_pages → report_ingestion, build_retrieval_index."""
    return Pipeline(
        [
            Node(
                crawl_docs,
                inputs=["raw_pages_previous", "params:ingestion"],
                outputs=["raw_pages", "crawl_report"],
                name="crawl_docs",
            ),
            Node(clean_pages, inputs=["raw_pages", "params:ingestion"], outputs="clean_pages", name="clean_pages"),
            Node(chunk_pages, inputs=["clean_pages", "params:ingestion"], outputs=["doc_chunks", "chunking_summary"],
                 name="chunk_pages"),
            Node(
                report_ingestion,
                inputs=["crawl_report", "clean_pages", "doc_chunks", "chunking_summary", "params:ingestion"],
                outputs=["ingestion_report", "chunk_lengths_plot"],
                name="report_ingestion",
            ),
            Node(
                build_retrieval_index,
                inputs=["doc_chunks", "params:retrieval"],
                outputs="retrieval_index",
                name="build_retrieval_index",
            ),
        ]
    )
