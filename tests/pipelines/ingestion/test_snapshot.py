"""The committed offline docs site: reproducible from the scrape, and every sentence survives cleaning."""

from __future__ import annotations

import html
import json
import re

import pytest
import yaml

from kaggle_qa.pipelines.ingestion.cleaning import html_to_text
from kaggle_qa.pipelines.ingestion.snapshot import build_site, slug_from_filename

from .conftest import PROJECT_ROOT, SCRAPE, SNAPSHOT

SCRAPE_FILES = sorted(SCRAPE.glob("*_*.txt"))


def test_the_vendored_scrape_is_in_the_repository():
    """The tests below are parametrized by its files: an empty list must fail here, not skip there."""
    manifest = json.loads((SNAPSHOT / "snapshot.json").read_text())
    assert [path.name for path in SCRAPE_FILES] == sorted(page["source_file"] for page in manifest["pages"])


def files_under(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_committed_snapshot_is_exactly_what_the_builder_writes(tmp_path):
    build_site(SCRAPE, tmp_path / "site")
    assert files_under(tmp_path / "site") == files_under(SNAPSHOT)


def test_snapshot_declares_source_robots_and_links(ingestion_params):
    robots = (SNAPSHOT / "robots.txt").read_text()
    assert "Disallow: /docs/internal/" in robots
    assert (SNAPSHOT / "docs/internal/style-guide.html").is_file()
    index = (SNAPSHOT / "docs.html").read_text()
    for scrape in SCRAPE_FILES:
        slug = slug_from_filename(scrape.name)
        page = (SNAPSHOT / f"docs/{slug}.html").read_text()
        assert 'name="snapshot-scrape-date" content="2024-03-18/19"' in page
        assert f'href="/docs/{slug}"' in index
        main = page[page.index("<main>") : page.index("</main>")]  # outside the navigation
        others = set(re.findall(r'href="/docs/([a-z-]+)', main)) - {slug}
        assert others, f"{slug}: its text links to no other docs page"
    # the text's own links to the live docs point into the snapshot
    assert 'href="/docs/datasets#collaborating-on-datasets"' in (SNAPSHOT / "docs/notebooks.html").read_text()


def comparable(text: str) -> str:
    """Text without markup, link targets or backticks, in single spaces (scrape and clean text alike)."""
    text = re.sub(r" ?\((?:https?://|mailto:)[^\s()]+\)", "", text)
    text = re.sub(r"<[^<>]+>", " ", text)
    text = html.unescape(text).replace("`", "")
    text = " ".join(text.split())
    return re.sub(r"\( ", "(", re.sub(r" ([.,:;!?)])", r"\1", text))


@pytest.mark.parametrize("scrape", SCRAPE_FILES, ids=lambda p: p.name)
def test_every_sentence_of_the_scrape_survives_cleaning(scrape, ingestion_params):
    slug = slug_from_filename(scrape.name)
    cleaning = ingestion_params["cleaning"]
    page = (SNAPSHOT / f"docs/{slug}.html").read_text()
    clean = comparable(html_to_text(page, f"https://www.kaggle.com/docs/{slug}", cleaning["drop_tags"],
                                    cleaning["content_selectors"]))
    lines = [comparable(line) for line in scrape.read_text().splitlines()]
    missing = [line for line in lines if line and line not in clean]
    assert not missing, missing[:3]


def merged_ingestion(env: str) -> dict:
    """The `ingestion` parameters Kedro gives `--env <env>` (soft merge over conf/base)."""
    from kedro.config import OmegaConfigLoader

    from kaggle_qa.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **(CONFIG_LOADER_ARGS | {"default_run_env": env}))
    return loader["parameters"]["ingestion"]


def test_live_environment_overrides_only_what_differs():
    """Parameters soft-merge: conf/live names only live values, every other key comes from base."""
    def keys(tree, prefix=""):
        return {prefix + k for k in tree} | {
            key for k, v in tree.items() if isinstance(v, dict) for key in keys(v, f"{prefix}{k}.")
        }

    base = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingestion.yml").read_text())["ingestion"]
    overrides = yaml.safe_load((PROJECT_ROOT / "conf/live/parameters_ingestion.yml").read_text())["ingestion"]
    assert keys(overrides) <= keys(base)  # no typo'd key that base does not know
    live = merged_ingestion("live")
    assert keys(live) == keys(base)
    assert live["cleaning"] == base["cleaning"] and live["crawl"]["allowed_path_prefixes"] == ["/docs"]
    assert live["target"] == "live" and live["crawl"]["render_js"] is True
    assert live["crawl"]["download_delay"] >= 1 and live["crawl"]["concurrent_requests_per_domain"] == 1
