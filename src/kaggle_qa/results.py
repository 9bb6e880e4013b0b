"""`make results`: copy the evidence the README quotes into ``docs/results/<date>-<cpu>/`` and
render the README's and docs/results.md's tables from it.

    python -m kaggle_qa.results [--log run.log] [--command "kedro run"]   # copy the latest versions
    python -m kaggle_qa.results --update-readme [--dir docs/results/X]    # rewrite the marked tables

Copying reads the catalog (``conf/base`` + ``conf/local``, or ``--env``): for each report in
:data:`SOURCES` the latest saved version (or the unversioned file), copied byte for byte, plus a
``manifest.json`` (git commit, CPU, torch, the version of every file, the wall time of each
pipeline when a ``kedro run`` log is given, the command). Rendering reads only that folder, so
``tests/test_readme_numbers.py`` can re-render every table from the committed files and fail on
any number that does not match.

A table in a markdown file lives between ``<!-- results:NAME docs/results/DIR -->`` and
``<!-- /results:NAME -->``; ``--update-readme`` rewrites every such block in README.md and
docs/results.md from DIR (``--dir`` moves them all to another folder, by default the newest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from kaggle_qa.metrics.bootstrap import estimate_text, p_text

# catalog entries copied (missing ones are listed in the manifest, not an error: an optional
# section such as user_questions_metrics exists only where its pipeline ran)
SOURCES = (
    "eval_report", "eval_chart", "metrics", "cross_teacher_metrics",
    "train_metrics", "learning_curves",
    "datasheet", "datasheet_json", "crawl_report", "ingestion_report",
    "retrieval_metrics", "retrieval_table", "context_modes_metrics", "context_modes_table",
    "user_questions_metrics", "user_questions_table",
)
MARKDOWN_FILES = ("README.md", "docs/results.md")
BLOCK = re.compile(r"<!-- results:(?P<name>[\w-]+) (?P<dir>\S+) -->\n(?P<body>.*?)<!-- /results:(?P=name) -->", re.S)
PIPELINES = ("ingestion", "synthesis", "train", "evaluate")


# ---------------------------------------------------------------- machine and run facts

def cpu_info(cpuinfo: str | None = None, env: dict | None = None) -> dict:
    """Vendor, model, the flags that decide the numerics, and a short tag for folder names
    (``amd-avx512bf16``, ``intel-amx``, ``amd-avx2``, …; ``-avx2`` too when PyTorch is held to AVX2)."""
    env = os.environ if env is None else env
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    field = lambda name: next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                               if line.split(":", 1)[0].strip() == name), "")
    flags = set(field("flags").split())
    vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(field("vendor_id"), platform.machine().lower() or "cpu")
    if env.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2" or not flags & {"avx512_bf16", "amx_tile"}:
        isa = "avx2" if "avx2" in flags or env.get("ATEN_CPU_CAPABILITY") else "generic"
    else:
        isa = "amx" if "amx_tile" in flags else "avx512bf16"
    return {
        "tag": f"{vendor}-{isa}",
        "model": field("model name"),
        "cores": os.cpu_count(),
        "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}),
        "aten_cpu_capability": env.get("ATEN_CPU_CAPABILITY"),
    }


_RICH_TIME = re.compile(r"^\[(\d\d/\d\d/\d\d \d\d:\d\d:\d\d)\]")
_NODE_DONE = re.compile(r"Completed node:[ \t]*(\S*)")
_NODE_START = re.compile(r"Running node:")


def node_times(log_text: str) -> list[dict]:
    """Wall seconds of each node of a sequential ``kedro run`` log (Kedro's rich log prints a
    timestamp whenever the second changes): from one node's completion to the next one's, the
    first from its start, so dataset loads and saves count to the node that needs them. A node
    name wrapped onto the next line (a narrow terminal) is read from there."""
    now, previous, out = None, None, []
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        stamp = _RICH_TIME.match(line)
        if stamp:
            now = datetime.strptime(stamp.group(1), "%m/%d/%y %H:%M:%S")
        if previous is None and _NODE_START.search(line) and now:
            previous = now
        done = _NODE_DONE.search(line)
        if done and now and previous:
            name = done.group(1)
            if (not name or re.fullmatch(r"\S+\.py:\d+", name)) and i + 1 < len(lines):  # rich's source column
                name = (lines[i + 1].split() or [""])[0]
            out.append({"node": name, "seconds": (now - previous).total_seconds()})
            if len(out) == 1:
                out[0]["start"] = previous
            previous = now
    return out


def stage_times(nodes: list[dict], node_pipeline: dict[str, str]) -> dict:
    """Seconds per pipeline (nodes summed), from :func:`node_times` and a node → pipeline map."""
    stages: dict[str, float] = {}
    for record in nodes:
        stage = node_pipeline.get(record["node"], "other")
        stages[stage] = stages.get(stage, 0.0) + record["seconds"]
    return stages


def _node_pipeline_map() -> dict[str, str]:
    from kedro.framework.project import pipelines

    return {node.name: name for name in PIPELINES if name in pipelines for node in pipelines[name].nodes}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git(*args: str, cwd: Path) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# ---------------------------------------------------------------- copying the evidence

def latest_files(project: Path, env: str | None = None) -> dict[str, dict]:
    """name → {path, version} of the latest saved file of each entry of :data:`SOURCES` that exists."""
    import tomllib

    from kedro.framework.project import configure_project, settings

    # the config loader alone, not a KedroSession: no hooks run (collecting evidence starts nothing)
    with open(project / "pyproject.toml", "rb") as file:
        configure_project(tomllib.load(file)["tool"]["kedro"]["package_name"])
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(project / settings.CONF_SOURCE), env=env,
                                          **settings.CONFIG_LOADER_ARGS)
    config = loader["catalog"]
    found = {}
    for name in SOURCES:
        entry = config.get(name)
        if not entry or "filepath" not in entry:
            continue
        base = project / entry["filepath"]
        version = None
        if entry.get("versioned"):  # Kedro's rule: the latest version is the greatest <filepath>/<version>/<name>
            saved = sorted(base.glob(f"*/{base.name}"))
            if not saved:
                continue
            path, version = saved[-1], saved[-1].parent.name
        else:
            path = base
        if path.is_file():
            found[name] = {"path": path, "version": version}
    return found


def collect(project: Path, out_root: Path, *, env: str | None = None, log: Path | list[Path] | None = None,
            command: str | None = None, cpu: dict | None = None, commit: str | None = None,
            node_pipeline: dict[str, str] | None = None, allow_missing: bool = False) -> Path:
    """Copy the latest reports into ``out_root/<date>-<cpu>[-<env>]/`` with a manifest; returns that folder.

    The date is the evaluation report's version (when the run finished), not today's.
    """
    files = latest_files(project, env)
    missing = [name for name in ("metrics", "eval_report", "train_metrics") if name not in files]
    if missing and (not allow_missing or "train_metrics" not in files):
        raise FileNotFoundError(
            f"no saved version of {', '.join(missing)} under {project / 'data'}: run the default job first "
            "(`make run`, or `make results RUN=1`)")
    cpu = cpu or cpu_info()
    version = (files.get("metrics") or files["train_metrics"])["version"] or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H.%M.%S.000Z")
    suffix = f"-{env}" if env and env != "base" else ""  # another environment's evidence never overwrites the default's
    folder = out_root / f"{version[:10]}-{cpu['tag']}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    copied = {}
    for name, info in files.items():
        target = folder / info["path"].name
        shutil.copyfile(info["path"], target)
        copied[name] = {"file": target.name, "version": info["version"],
                        "source": str(info["path"].relative_to(project))}
    stages, nodes = None, []
    versions = {info["version"] for info in files.values() if info["version"]}
    for one in ([log] if isinstance(log, (str, Path)) else log or []):
        if not Path(one).is_file():
            print(f"{one}: no such log, no wall times from it")
            continue
        found = node_times(Path(one).read_text(encoding="utf-8", errors="replace"))
        if not any(_log_matches(found, saved) for saved in versions):
            print(f"{one} is not the log of a run whose reports are copied: no wall times from it")
            continue
        nodes = [n for n in nodes if n["node"] not in {f["node"] for f in found}] + found  # a rerun node: the later log
    if nodes:
        stages = {k: round(v, 1) for k, v in stage_times(nodes, node_pipeline or _node_pipeline_map()).items()}
        stages["total"] = round(sum(n["seconds"] for n in nodes), 1)
    manifest = {
        "command": command,
        "env": env or "base",
        "git_commit": commit or _git("rev-parse", "HEAD", cwd=project),
        "git_dirty": None if commit else bool(_git("status", "--porcelain", "--untracked-files=no", cwd=project)),
        "cpu": cpu,
        "torch": _version("torch"),
        "python": platform.python_version(),
        "collected_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": copied,
        "not_found": [name for name in SOURCES if name not in files],
        "stage_seconds": stages,
        "node_seconds": [{"node": n["node"], "seconds": n["seconds"]} for n in nodes or []] or None,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return folder


def _log_matches(nodes: list[dict], version: str) -> bool:
    """A default run saves every dataset under its session's start time: the log's first node
    must start within two minutes of it (times in UTC, as Kedro's versions are)."""
    if not nodes or "start" not in nodes[0]:
        return False
    saved = datetime.strptime(version[:19], "%Y-%m-%dT%H.%M.%S")
    return abs((nodes[0]["start"] - saved).total_seconds()) < 120


def newest_results_dir(root: Path) -> Path:
    dirs = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()
                  and json.loads((p / "manifest.json").read_text()).get("env", "base") == "base")  # the default run's
    if not dirs:
        raise FileNotFoundError(f"no results folder with a manifest.json under {root}: run `make results`")
    return dirs[-1]


# ---------------------------------------------------------------- rendering tables

class Results:
    """The JSON files of one results folder, looked up by dotted path (``metrics:metrics.base.overall.rougeL``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._cache: dict[str, object] = {}

    def json(self, name: str):
        if name not in self._cache:
            path = self.folder / f"{name}.json"
            self._cache[name] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        return self._cache[name]

    def get(self, ref: str):
        """Value at ``file:key.key…`` (``None`` when the file or a key is missing)."""
        name, _, keys = ref.partition(":")
        value = self.json(name)
        for key in keys.split("."):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value


def fmt(value, kind: str = "f3") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "f3":
        return f"{value:.3f}"
    if kind == "f2":
        return f"{value:.2f}"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "min":
        return f"{value / 60:.1f} min"
    return str(value)


def fmt_p(p, resamples) -> str:
    """A change's p as the reports print it (:func:`kaggle_qa.metrics.bootstrap.p_text`); "" when absent."""
    if p is None:
        return ""
    return p_text(p, resamples) if resamples else f"p = {p:.3f}"  # no resample count recorded: no floor known


# (row label, results file, metric group, metric name, format); a row whose values are all
# missing is left out (a metric an older run did not record)
HEADLINE_ROWS = (
    # ROUGE-L is computed on open answers only (labelled items are scored on their label), so the
    # "overall" group's ROUGE-L is the open questions' one: one row, named for what it measures
    ("ROUGE-L, open questions", "metrics", "overall", "rougeL", "f3"),
    ("answer loss on the reference answers (lower is better)", "metrics", "overall", "answer_loss", "f3"),
    ("grounded answers", "metrics", "overall", "grounded_rate", "f3"),
    ("answers cut at max_new_tokens", "metrics", "overall", "hit_max_new_tokens_rate", "f3"),
    ("true/false + yes/no, balanced accuracy", "metrics", "true_false+yes_no", "balanced_accuracy", "f3"),
    ("true/false + yes/no, log-likelihood accuracy", "metrics", "true_false+yes_no", "loglikelihood_accuracy", "f3"),
    ("ROUGE-L, open questions", "cross_teacher_metrics", "overall", "rougeL", "f3"),
    ("answer loss on the other teachers' answers (lower is better)", "cross_teacher_metrics", "overall",
     "answer_loss", "f3"),
    ("true/false + yes/no, balanced accuracy", "cross_teacher_metrics", "true_false+yes_no", "balanced_accuracy", "f3"),
    ("true/false + yes/no, log-likelihood accuracy", "cross_teacher_metrics", "true_false+yes_no",
     "loglikelihood_accuracy", "f3"),
)
SET_NAMES = {"metrics": "ours (v2, {n})", "cross_teacher_metrics": "other teachers ({n})"}
# the best constant answer beside a label accuracy: the first key the run recorded
CONSTANT_KEYS = ("best_constant_accuracy", "best_constant", "majority_baseline")


def _metric_row(res: Results, label: str, source: str, group: str, name: str, kind: str) -> list[str] | None:
    base = res.get(f"{source}:metrics.base.{group}.{name}")
    tuned = res.get(f"{source}:metrics.fine_tuned.{group}.{name}")
    if base is None and tuned is None:
        return None
    change = res.get(f"{source}:changes.base→fine_tuned.{group}.{name}") or {}
    resamples = res.get(f"{source}:bootstrap.resamples")
    delta = change.get("delta")
    change_cell = "–" if delta is None else f"{delta:+.3f} ({fmt_p(change.get('p_value'), resamples)})"
    keys = (("best_constant_balanced_accuracy",) if "balanced" in name else ()) + CONSTANT_KEYS
    constant = next((res.get(f"{source}:metrics.base.{group}.{key}") for key in keys
                     if res.get(f"{source}:metrics.base.{group}.{key}") is not None), None)
    n = res.get(f"{source}:metrics.base.{group}.n")
    set_name = SET_NAMES[source].format(n=fmt(res.get(f"{source}:metrics.base.overall.n"), "int"))
    extra = f"; best constant answer {fmt(constant, kind)}" if "accuracy" in name and constant is not None else ""
    what = f"{label} ({fmt(n, 'int')} items{extra})" if group != "overall" else label
    return [set_name, what, fmt(base, kind), fmt(tuned, kind), change_cell]


def table(headers: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _conditions(res: Results, dir_link: str) -> str:
    m = res.json("manifest") or {}
    cpu = m.get("cpu", {})
    stages = m.get("stage_seconds") or {}
    train = res.json("train_metrics") or {}
    timing = ", ".join(f"{stage} {fmt(stages[stage], 'min')}" for stage in (*PIPELINES, "total") if stage in stages)
    parts = [
        f"`{m.get('command') or 'kedro run'}` on {cpu.get('model') or cpu.get('tag')} "
        f"({cpu.get('tag')}, {cpu.get('cores')} cores), torch {m.get('torch')}, {dir_link.split('/')[-1][:10]}",
    ]
    if train:
        parts.append(f"training {fmt(train.get('steps'), 'int')} steps, {fmt(train.get('epochs_completed'), 'f2')} epochs, "
                     f"{train.get('compute_dtype')} compute")
    if timing:
        parts.append(f"wall time {timing}")
    return "; ".join(parts) + f". Files, commit and versions: [{dir_link}]({dir_link}/manifest.json)."


def render_headline(res: Results, dir_link: str) -> str:
    rows = [row for spec in HEADLINE_ROWS if (row := _metric_row(res, *spec))]
    if not rows:
        return (f"{_conditions(res, dir_link)}\n\nNo evaluation in this folder (the run did not reach it):"
                " `make results RUN=1` makes one.\n")
    body = table(["test set", "metric", "base", "fine-tuned", "change (paired p)"], rows, "llrrr")
    return f"{_conditions(res, dir_link)}\n\n{body}\n"


def render_metrics_detail(res: Results, dir_link: str) -> str:
    """Every task type of both test sets: size, ROUGE-L, BLEU, semantic similarity, answer loss, label accuracy."""
    columns = (("rougeL", "f3"), ("bleu", "f1"), ("semantic_similarity", "f3"), ("answer_loss", "f3"),
               ("grounded_rate", "f3"), ("loglikelihood_accuracy", "f3"), ("first_word_accuracy", "f3"))
    if not res.json("metrics"):
        return "No evaluation metrics in this folder.\n"
    rows = []
    for source in ("metrics", "cross_teacher_metrics"):
        groups = res.get(f"{source}:metrics.base") or {}
        for group in groups:
            for model in ("base", "fine_tuned"):
                values = res.get(f"{source}:metrics.{model}.{group}") or {}
                rows.append([SET_NAMES[source].format(n=fmt(res.get(f"{source}:metrics.base.overall.n"), "int")),
                             group, model, fmt(values.get("n"), "int"),
                             *(fmt(values.get(name), kind) for name, kind in columns)])
    body = table(["test set", "group", "model", "n", *(name for name, _ in columns)], rows, "lllr" + "r" * len(columns))
    return f"From [{dir_link}/metrics.json]({dir_link}/metrics.json) and `cross_teacher_metrics.json`.\n\n{body}\n"


def render_context_modes(res: Results, dir_link: str) -> str:
    summary = res.json("context_modes_metrics")
    if not summary:
        return "No context-mode results in this folder.\n"
    columns = (("overall", "answer_loss"), ("overall", "rougeL"), ("overall", "semantic_similarity"),
               ("overall", "grounded_rate"), ("true_false+yes_no", "loglikelihood_accuracy"))
    rows = []
    for model in ("base", "fine_tuned"):
        for mode, result in summary["modes"].items():
            rows.append([model, mode, *(fmt(result["metrics"][model].get(g, {}).get(n)) for g, n in columns)])
    body = table(["model", "context", *(n for _, n in columns)], rows, "ll" + "r" * len(columns))
    found = summary.get("retrieval", {})
    return (f"The first {fmt(summary.get('questions'), 'int')} test questions; retrieved context: top "
            f"{found.get('top_k')} by `{found.get('method')}`, gold chunk among them for "
            f"{fmt(found.get('gold_chunk_retrieved'), 'pct')}. From "
            f"[{dir_link}/context_modes_metrics.json]({dir_link}/context_modes_metrics.json).\n\n{body}\n")


def render_retrieval(res: Results, dir_link: str) -> str:
    result = res.json("retrieval_metrics")
    if not result or "methods" not in result:
        return "No retrieval results in this folder.\n"
    rows = [[method, *(fmt(values[f"hit@{k}"]) for k in (1, 3, 5)), fmt(values["mrr"])]
            for method, values in result["methods"].items()]
    rel = result["relevance"]
    if "chosen" in rel:  # calibrated per site: the chosen threshold's rates on the disjoint reported part
        part = rel["chosen"].get("reported") or {}
        lift = rel["chosen"].get("lift_threshold")
        refusal = (f"Refusal threshold {fmt(rel['chosen'].get('threshold'), 'f3')}"
                   + (f" and context-lift threshold {fmt(lift, 'f3')}" if lift is not None else "")
                   + " (chosen on a calibration part; on the "
                   f"disjoint reported part): answers {fmt(part.get('in_domain_answered'), 'pct')} of "
                   f"{fmt(part.get('in_domain_questions'), 'int')} in-domain questions, refuses "
                   + "; ".join(f"{fmt(part.get(f'{kind}_refused'), 'pct')} of {fmt(part.get(f'{kind}_questions'), 'int')} "
                               f"{kind} off-topic ones" for kind in ("near", "far") if part.get(f"{kind}_questions")))
    else:  # a folder written before the per-site calibration
        refusal = (f"Relevance threshold {fmt(rel['configured_threshold'], 'f2')}: answers "
                   f"{fmt(rel['configured_in_domain_answered'], 'pct')} of the in-domain questions, refuses "
                   f"{fmt(rel['configured_off_topic_refused'], 'pct')} of {fmt(rel['off_topic_questions'], 'int')} "
                   "off-topic ones")
    return (f"{fmt(result['questions'], 'int')} questions over {fmt(result['chunks'], 'int')} chunks. {refusal}. From "
            f"[{dir_link}/retrieval_metrics.json]({dir_link}/retrieval_metrics.json).\n\n"
            + table(["method", "hit@1", "hit@3", "hit@5", "MRR"], rows, "lrrrr") + "\n")


USER_RATES = (  # (field of user_questions_metrics.rates, row label, count the questions); rows absent from a folder are left out
    ("correct", "answered correctly (ROUGE-L recall of the expected answer ≥ {recall}, not refused)", True),
    ("key_facts_found", "key facts stated (share per question)", False),
    ("recall_correct", "ROUGE-L recall of the expected answer ≥ {recall}, not refused", True),
    ("rougeL_recall", "ROUGE-L recall of the expected answer", False),
    ("gold_page_cited", "the expected page among the cited sources", True),
    ("refused", "refused (\"not covered\")", True),
)


def render_user_questions(res: Results, dir_link: str) -> str:
    """The user's own questions in retrieved mode, base vs fine-tuned, and the calibrated refusal."""
    metrics = res.json("user_questions_metrics")
    if not metrics or metrics.get("skipped") or "rates" not in metrics:
        return "No user-question results in this folder.\n"
    n, rates = metrics.get("reported"), metrics["rates"]
    resamples = res.get("user_questions_metrics:bootstrap.resamples")
    rows = []
    for field, label, count in USER_RATES:
        if field not in rates["fine_tuned"]:
            continue
        if field == "correct" and "recall_correct" in rates["fine_tuned"]:
            label = ("answered correctly (every key fact the question file names stated, not refused)"
                     if "key_facts_found" in rates["fine_tuned"] else
                     "answered correctly (key facts stated where named, else ROUGE-L recall ≥ {recall}; not refused)")
        change = rates.get("change", {}).get(field) or {}
        delta = change.get("delta")
        rows.append([label.format(recall=metrics.get("correct_recall")),
                     estimate_text(rates["base"].get(field), n if count else None), estimate_text(rates["fine_tuned"].get(field), n if count else None),
                     "–" if delta is None else f"{delta:+.3f} ({fmt_p(change.get('p_value'), resamples)})"])
    body = table(["question file, retrieved mode", "base", "fine-tuned", "change (paired p)"], rows, "lrrr")
    text = (f"{_conditions(res, dir_link)}\n\n{fmt(n, 'int')} reported questions of {fmt(metrics.get('questions'), 'int')} "
            f"({fmt(metrics.get('selection_held_out'), 'int')} held for model selection), answered as `kaggle-qa ask` "
            f"answers them: top {metrics['retrieval']['top_k']} by `{metrics['retrieval']['method']}`, refusal below "
            f"relevance {fmt(metrics.get('relevance_threshold'), 'f3')}"
            + (f" or context lift {fmt(metrics.get('lift_threshold'), 'f3')}" if metrics.get("lift_threshold") is not None
               else "")
            + f", at most {fmt(metrics.get('max_new_tokens'), 'int')} "
            f"new tokens; 95 % page-bootstrap intervals. From "
            f"[{dir_link}/user_questions_metrics.json]({dir_link}/user_questions_metrics.json).\n\n{body}\n")
    chosen = res.get("retrieval_metrics:relevance.chosen.reported")
    if chosen:
        parts = [f"in-domain questions answered {fmt(chosen.get('in_domain_answered'), 'pct')} "
                 f"(of {fmt(chosen.get('in_domain_questions'), 'int')})"]
        parts += [f"{kind}-domain off-topic questions refused {fmt(chosen.get(f'{kind}_refused'), 'pct')} "
                  f"(of {fmt(chosen.get(f'{kind}_questions'), 'int')})" for kind in ("near", "far")]
        lift = res.get("retrieval_metrics:relevance.chosen.lift_threshold")
        text += ("\nRefusal threshold" + (f"s (relevance {fmt(res.get('retrieval_metrics:relevance.chosen.threshold'), 'f3')},"
                                          f" context lift {fmt(lift, 'f3')})" if lift is not None else "")
                 + " chosen on a calibration part of the questions; on the disjoint reported part: "
                 + "; ".join(parts) + f". From [{dir_link}/retrieval_metrics.json]({dir_link}/retrieval_metrics.json).\n")
    return text


def render_run(res: Results, dir_link: str) -> str:
    """Data sizes, training and wall time per stage."""
    m = res.json("manifest") or {}
    train = res.json("train_metrics") or {}
    crawl = res.json("crawl_report") or {}
    sheet = res.json("datasheet") or {}
    rows = []
    stages = m.get("stage_seconds") or {}
    for stage in (*PIPELINES, "total"):
        if stage in stages:
            rows.append(["wall time", stage, fmt(stages[stage], "min")])
    pages = crawl.get("pages_fetched", crawl.get("fetched"))
    if isinstance(pages, list):
        pages = len(pages)
    if pages is not None:
        rows.append(["ingestion", "pages crawled", fmt(pages, "int")])
    for version, size in (_dataset_sizes(sheet) or {}).items():
        rows.append(["synthesis", f"{version} rows", fmt(size, "int")])
    for key, what, kind in (("steps", "steps", "int"), ("epochs_completed", "epochs", "f2"),
                            ("training_s", "seconds in training steps", "f1"),
                            ("validation_s", "seconds in validation", "f1"),
                            ("tokens_per_s", "tokens/s", "f1"), ("base_val_loss", "validation loss, base", "f3"),
                            ("best_val_loss", "validation loss, kept", "f3"),
                            ("train_label_accuracy", "label accuracy on training rows (kept)", "f3")):
        if train.get(key) is not None:
            rows.append(["train", what, fmt(train[key], kind)])
    return (f"From [{dir_link}/manifest.json]({dir_link}/manifest.json), `train_metrics.json`, `crawl_report.json`, "
            f"`datasheet.json`.\n\n" + table(["stage", "what", "value"], rows, "llr") + "\n")


def _dataset_sizes(sheet: dict) -> dict | None:
    table1 = sheet.get("table1")
    if isinstance(table1, dict):
        return {v: d["instances"] for v, d in table1.items() if isinstance(d, dict) and "instances" in d} or None
    for key in ("rows", "sizes", "row_counts"):
        if isinstance(sheet.get(key), dict):
            return sheet[key]
    versions = sheet.get("versions")
    if isinstance(versions, dict):
        return {v: d.get("rows") for v, d in versions.items() if isinstance(d, dict) and "rows" in d} or None
    return None


def render_time(res: Results, dir_link: str) -> str:
    """One line: how long the default run took, per pipeline, on which machine."""
    m = res.json("manifest") or {}
    stages = m.get("stage_seconds") or {}
    cpu = m.get("cpu", {})
    if "total" not in stages:
        return f"Wall time not recorded for this run ([{dir_link}]({dir_link}/manifest.json)).\n"
    parts = ", ".join(f"{stage} {fmt(stages[stage], 'min')}" for stage in PIPELINES if stage in stages)
    return (f"`{m.get('command') or 'kedro run'}` took **{fmt(stages['total'], 'min')}** ({parts}) on {cpu.get('cores')} cores of "
            f"{cpu.get('model') or cpu.get('tag')} ({cpu.get('tag')}).\n")


RENDERERS = {
    "time": render_time,
    "headline": render_headline,
    "metrics": render_metrics_detail,
    "context-modes": render_context_modes,
    "retrieval": render_retrieval,
    "run": render_run,
    "user-questions": render_user_questions,
}


def render(name: str, folder: Path, dir_link: str) -> str:
    if name not in RENDERERS:
        raise KeyError(f"unknown results table {name!r} (known: {', '.join(RENDERERS)})")
    return RENDERERS[name](Results(folder), dir_link)


def _env_of(folder: Path) -> str:
    """The Kedro environment a results folder's run used (its manifest; ``base`` when unrecorded)."""
    manifest = folder / "manifest.json"
    return json.loads(manifest.read_text()).get("env", "base") if manifest.is_file() else "base"


def update_markdown(path: Path, project: Path, new_dir: str | None = None) -> int:
    """Rewrite every results block of `path` from its folder, or from `new_dir` where the block's
    folder is of the same environment as `new_dir`; returns how many."""
    text = path.read_text(encoding="utf-8")
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        count += 1
        name, folder = match["name"], match["dir"]
        if new_dir and _env_of(project / folder) == _env_of(project / new_dir):
            folder = new_dir  # a block of another environment's run (e.g. --env click) keeps its folder
        link = os.path.relpath(project / folder, path.parent)
        return f"<!-- results:{name} {folder} -->\n{render(name, project / folder, link)}<!-- /results:{name} -->"

    path.write_text(BLOCK.sub(replace, text), encoding="utf-8")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd())
    parser.add_argument("--env", default=None, help="Kedro environment whose catalog names the reports")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--log", type=Path, action="append",
                        help="a `kedro run` log, for the wall time of each node and pipeline (repeatable: a run "
                             "made of several `kedro run`s)")
    parser.add_argument("--command", default="kedro run", help="the command that produced the run (manifest)")
    parser.add_argument("--commit", help="the commit the run's code came from, when HEAD has moved since")
    parser.add_argument("--allow-missing", action="store_true",
                        help="copy what exists even when the evaluation has not finished (it needs train_metrics)")
    parser.add_argument("--no-copy", action="store_true", help="do not copy; only --update-readme")
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite the results tables in README.md and docs/results.md")
    parser.add_argument("--dir", help="results folder the tables read (default: the one just copied, else the newest)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    folder = None
    if not args.no_copy:
        folder = collect(project, project / args.out, env=args.env, log=args.log, command=args.command,
                         commit=args.commit, allow_missing=args.allow_missing)
        print(f"copied into {folder.relative_to(project)}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    if args.update_readme:
        chosen = args.dir or str((folder or newest_results_dir(project / args.out)).relative_to(project))
        for name in MARKDOWN_FILES:
            if (project / name).is_file():
                print(f"{name}: {update_markdown(project / name, project, chosen)} tables from {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
