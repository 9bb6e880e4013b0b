"""The README and docs quote only what the committed evidence says, and their links resolve.

Every results table (between ``<!-- results:NAME docs/results/DIR -->`` markers, in README.md and
docs/results.md) is re-rendered from the files committed in DIR by :mod:`kaggle_qa.results` and
compared cell by cell: a number edited by hand, or left behind when the evidence changed, fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from kaggle_qa import results

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"


def _table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line)]


def _prose(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("|")]


def block_mismatches(text: str, home: Path, label: str) -> list[str]:
    """Every difference between the results blocks of `text` (a markdown file in folder `home`)
    and a fresh rendering from the folders they name."""
    problems = []
    for match in results.BLOCK.finditer(text):
        name, folder = match["name"], match["dir"]
        where = f"{label}, table {name!r} ({folder})"
        if not (PROJECT / folder / "manifest.json").is_file():
            problems.append(f"{where}: {folder}/manifest.json is not committed")
            continue
        expected = results.render(name, PROJECT / folder, os.path.relpath(PROJECT / folder, home))
        got_rows, want_rows = _table_rows(match["body"]), _table_rows(expected)
        if len(got_rows) != len(want_rows):
            problems.append(f"{where}: {len(got_rows)} table rows, the files give {len(want_rows)}")
        for r, (got, want) in enumerate(zip(got_rows, want_rows)):
            for c, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    problems.append(f"{where}, row {r} ({' / '.join(want[:2])}), column {c}: "
                                    f"has {g!r}, {folder} gives {w!r}")
            if len(got) != len(want):
                problems.append(f"{where}, row {r}: {len(got)} cells, expected {len(want)}")
        if _prose(match["body"]) != _prose(expected):
            problems.append(f"{where}: the caption differs from the one rendered from {folder}:\n"
                            f"  has:      {_prose(match['body'])}\n  expected: {_prose(expected)}")
    return problems


def _mismatches(name: str) -> list[str]:
    path = PROJECT / name
    return block_mismatches(path.read_text(encoding="utf-8"), path.parent, name)


def test_readme_has_one_results_table_from_committed_evidence():
    blocks = [m["name"] for m in results.BLOCK.finditer(README.read_text(encoding="utf-8"))]
    assert blocks.count("headline") == 1, f"README results blocks: {blocks}"


@pytest.mark.parametrize("name", results.MARKDOWN_FILES)
def test_every_number_in_the_results_tables_matches_the_committed_files(name):
    problems = _mismatches(name)
    assert not problems, "stale or edited numbers (regenerate with `make results`, see docs/results.md):\n" + \
        "\n".join(problems)


def test_an_edited_number_in_the_readme_fails():
    text = README.read_text(encoding="utf-8")
    match = next(m for m in results.BLOCK.finditer(text) if re.search(r"\d+\.\d+", m["body"]))
    number = re.search(r"\d+\.\d+", match["body"])
    digits = number.group(0)
    edited_number = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    body = match["body"][:number.start()] + edited_number + match["body"][number.end():]
    edited = text[:match.start("body")] + body + text[match.end("body"):]
    problems = block_mismatches(edited, PROJECT, "README.md (edited)")
    assert any(edited_number in p for p in problems), problems


def test_readme_fits_on_a_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/ (limit 200)"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(path: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):  # a fence opens or closes only at the start of a line
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#+\s+(.*)$", line)):
            anchors.add(_slug(heading.group(1)))
    return anchors


def _documents() -> list[Path]:
    docs = [README, PROJECT / "conf" / "README.md", *sorted((PROJECT / "docs").rglob("*.md"))]
    evidence = PROJECT / "docs" / "results"
    return [p for p in docs if p.is_file() and evidence not in p.parents]  # copied reports are not docs


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(PROJECT)))
def test_every_relative_link_resolves(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(PROJECT) if PROJECT in resolved.parents else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{doc.relative_to(PROJECT)}: broken links: {broken}"


# ---------------------------------------------------------------- the collector itself

KEDRO_LOG = """\
[12/06/26 19:08:57] INFO     Using 'rich_logging.yml' as logging configuration.
[12/06/26 19:08:58] INFO     Running node: crawl_docs:                node.py:531
                             crawl_docs([params:ingestion]) -> [raw_pages]
[12/06/26 19:09:03] INFO     Completed node: crawl_docs            runner.py:245
                    INFO     Running node: clean_pages: clean([raw_pages]) -> [clean_pages]
                    INFO     Completed node: clean_pages           runner.py:245
                    INFO     Running node: train_adapter:            node.py:531
[12/06/26 19:24:03] INFO     Completed node:                       runner.py:245
                             train_adapter
"""


def test_node_times_come_from_the_log_timestamps():
    nodes = results.node_times(KEDRO_LOG)
    assert [(n["node"], n["seconds"]) for n in nodes] == [("crawl_docs", 5.0), ("clean_pages", 0.0),
                                                          ("train_adapter", 900.0)]
    stages = results.stage_times(nodes, {"crawl_docs": "ingestion", "clean_pages": "ingestion", "train_adapter": "train"})
    assert stages == {"ingestion": 5.0, "train": 900.0}
    assert results._log_matches(nodes, "2026-12-06T19.08.51.867Z")
    assert not results._log_matches(nodes, "2026-12-06T17.08.51.867Z")  # another run's log


@pytest.mark.parametrize("flags, vendor, env, tag", [
    ("avx2 avx512f avx512_bf16", "AuthenticAMD", {}, "amd-avx512bf16"),
    ("avx2 avx512f avx512_bf16", "AuthenticAMD", {"ATEN_CPU_CAPABILITY": "avx2"}, "amd-avx2"),
    ("avx2 avx512f avx512_bf16 amx_tile amx_bf16", "GenuineIntel", {}, "intel-amx"),
    ("avx2", "AuthenticAMD", {}, "amd-avx2"),
])
def test_cpu_tag(flags, vendor, env, tag):
    cpuinfo = f"vendor_id\t: {vendor}\nmodel name\t: Some CPU\nflags\t\t: fpu {flags}\n"
    assert results.cpu_info(cpuinfo, env)["tag"] == tag


def test_collect_copies_the_latest_versions_with_a_manifest(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copyfile(PROJECT / "pyproject.toml", project / "pyproject.toml")
    for version, rouge in (("2026-12-01T10.08.50.000Z", 0.1), ("2026-12-02T10.08.50.000Z", 0.2)):
        for name, content in (("metrics.json", {"metrics": {"base": {"overall": {"rougeL": rouge}}}}),
                              ("train_metrics.json", {"steps": 3}), ("eval_report.md", "# report")):
            folder = project / "data" / "08_reporting" / name / version
            folder.mkdir(parents=True)
            (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    log = project / "run.log"
    log.write_text(KEDRO_LOG.replace("12/06/26 19:", "12/02/26 10:"))
    cpu = {"tag": "amd-avx512bf16", "model": "Test CPU", "cores": 2, "flags": []}
    out = results.collect(project, project / "docs" / "results", log=log, command="kedro run", cpu=cpu,
                              node_pipeline={"crawl_docs": "ingestion", "train_adapter": "train"})
    assert out.name == "2026-12-02-amd-avx512bf16"
    assert json.loads((out / "metrics.json").read_text())["metrics"]["base"]["overall"]["rougeL"] == 0.2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["metrics"]["version"] == "2026-12-02T10.08.50.000Z"
    assert "retrieval_metrics" in manifest["not_found"]
    assert manifest["stage_seconds"] == {"ingestion": 5.0, "other": 0.0, "train": 900.0, "total": 905.0}
    assert manifest["torch"] and manifest["cpu"]["tag"] == "amd-avx512bf16"
    res = results.Results(out)
    assert res.get("metrics:metrics.base.overall.rougeL") == 0.2 and res.get("metrics:metrics.nope") is None


def test_collect_without_a_run_names_what_is_missing(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copyfile(PROJECT / "pyproject.toml", project / "pyproject.toml")
    with pytest.raises(FileNotFoundError, match="metrics, eval_report, train_metrics"):
        results.collect(project, project / "docs" / "results", cpu={"tag": "x"})
