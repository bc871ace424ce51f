"""The Open LLM Leaderboard (eval=open_llm) through the real lm-evaluation-harness, offline: the six tasks'
own lm-eval configs reading a few items in each task's real schema from local files (`include:` the real
YAML, `dataset_path: json`), on tiny_random; a failing task does not stop the others; a dataset out of reach
stops before any model loads; lm-eval's multiple-choice log-likelihoods are our sequence_logps'."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import lm_eval
import pytest
import torch

from dno.policy.logps import collate, sequence_logps
from dno.runtime.files import read_json, write_json
from dno.runtime.layout import RunDir
from helpers import SMOKE, TOKENIZER, dno_eval, make_cfg, run, tiny_llama

TASKS = Path(lm_eval.__file__).parent / "tasks"
SIX = {  # local stand-in: (the real task's YAML, the splits it reads, its shots here, its metric)
    "arc_challenge_local": ("arc/arc_challenge.yaml", ("train", "validation", "test"), 2, "acc_norm"),
    "hellaswag_local": ("hellaswag/hellaswag.yaml", ("train", "validation"), 2, "acc_norm"),
    "mmlu_local": ("mmlu/default/_default_template_yaml", ("dev", "test"), 2, "acc"),
    "truthfulqa_mc2_local": ("truthfulqa/truthfulqa_mc2.yaml", ("validation",), 0, "acc"),
    "winogrande_local": ("winogrande/default.yaml", ("train", "validation"), 2, "acc"),
    "gsm8k_local": ("gsm8k/gsm8k.yaml", ("train", "test"), 2, "exact_match,strict-match"),
}


def items(task: str, n: int, rng: random.Random) -> list[dict]:
    """n items of a task in its dataset's real schema (ai2_arc, hellaswag, cais/mmlu, truthful_qa, winogrande,
    gsm8k), with the answer at a random place."""
    rows = []
    for i in range(n):
        k = rng.randrange(4)
        four = [f"{colour} {i}" for colour in ("red", "blue", "green", "black")]  # the answer is four[k]
        rows.append({
            "arc_challenge_local": {"id": f"q{i}", "question": f"Which is the answer to question {i}?",
                                    "choices": {"text": four, "label": list("ABCD")}, "answerKey": "ABCD"[k]},
            "hellaswag_local": {"ind": i, "activity_label": "Cooking", "ctx_a": f"A cook slices {i} onions.",
                                "ctx_b": "she", "ctx": f"A cook slices {i} onions. she", "endings": four,
                                "source_id": "x", "split": "val", "split_type": "indomain", "label": str(k)},
            "mmlu_local": {"question": f"What is {i} + {i}?", "subject": "abstract_algebra", "choices": four,
                           "answer": k},
            "truthfulqa_mc2_local": {"question": f"Is {i} even?",
                                     "mc1_targets": {"choices": four, "labels": [int(j == k) for j in range(4)]},
                                     "mc2_targets": {"choices": four, "labels": [int(j <= k) for j in range(4)]}},
            "winogrande_local": {"sentence": f"The cup did not fit in the box because the _ was too big {i}.",
                                 "option1": "cup", "option2": "box", "answer": str(1 + k % 2)},
            "gsm8k_local": {"question": f"Tom has {i} apples and buys 2 more. How many?",
                            "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"},
        }[task])
    return rows


def write_tasks(folder: Path, n: int = 6, seed: int = 0) -> list[str]:
    """The six tasks as user task YAMLs reading local files; the `eval.open_llm.*` overrides that run them."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for task, (base, splits, _, _) in SIX.items():
        rows = items(task, n, rng)
        lines = [f"include: {TASKS / base}", f"task: {task}", "dataset_path: json", "dataset_name: null",
                 "dataset_kwargs:", "  data_files:"]
        for split in splits:
            (folder / f"{task}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            lines.append(f"    {split}: {folder / f'{task}.{split}.jsonl'}")
        (folder / f"{task}.yaml").write_text("\n".join(lines) + "\n")
    entries = ",".join(f"{{task:{t},num_fewshot:{shots},metric:'{m}'}}" for t, (_, _, shots, m) in SIX.items())
    return [f"eval.open_llm.include_path={folder}", "eval.open_llm.include_defaults=false",
            f"eval.open_llm.tasks=[{entries}]", "eval.open_llm.bootstrap_iters=100"]


def open_llm(out: Path, tasks: list[str], *extra: str, check: bool = True):
    return dno_eval(*SMOKE, "eval=[open_llm]", *tasks, "logger=none", f"hydra.run.dir={out}", *extra, check=check,
                    timeout=600)


@pytest.mark.slow
def test_the_six_tasks_through_lm_eval_into_the_summary_and_their_folders(tmp_path):
    tasks = write_tasks(tmp_path / "tasks")
    open_llm(tmp_path / "eval", tasks)
    summary = read_json(tmp_path / "eval" / "summary.json")
    final = RunDir(tmp_path / "eval").final.benchmark("open_llm")
    values = []
    for task, (_, _, shots, metric) in SIX.items():
        results = read_json(final.task_results(task))  # lm-eval's own dict, as it returned it
        key = metric if "," in metric else f"{metric},none"
        assert summary[f"open_llm/{task}"] == results["results"][task][key]
        assert results["n-shot"][task] == shots and results["configs"][task]["dataset_path"] == "json"
        assert summary[f"open_llm/{task}_n"] == 6 and list(final.task(task).rglob("results_*.json"))
        assert list(final.task(task).rglob(f"samples_{task}_*.jsonl"))  # lm-eval's per-item file
        values.append(summary[f"open_llm/{task}"])
    assert summary["open_llm/avg"] == pytest.approx(sum(values) / 6)
    assert summary["open_llm/lm_eval_version"] == lm_eval.__version__
    prov = read_json(RunDir(tmp_path / "eval").provenance)["benchmarks"]["open_llm"]
    assert prov["open_llm/lm_eval_version"] == lm_eval.__version__ and "open_llm/gsm8k_local_version" in prov


@pytest.mark.slow
def test_a_failing_task_names_itself_and_the_others_finish_then_only_it_is_redone(tmp_path):
    tasks = write_tasks(tmp_path / "tasks")
    two = {t: SIX[t] for t in ("arc_challenge_local", "winogrande_local")}
    tasks[2] = "eval.open_llm.tasks=[" + ",".join(f"{{task:{t},num_fewshot:0,metric:acc}}" for t in two) + "]"
    task_yaml = tmp_path / "tasks" / "winogrande_local.yaml"
    good = task_yaml.read_text()
    (tmp_path / "tasks" / "my_scoring.py").write_text(
        "def process_results(doc, results):\n    raise RuntimeError('a bug in my scoring')\n")
    task_yaml.write_text(good + "process_results: !function my_scoring.process_results\n")  # fails when scoring
    proc = open_llm(tmp_path / "eval", tasks, check=False)
    assert proc.returncode == 3 and "task winogrande_local failed (RuntimeError: a bug in my scoring)" in proc.stderr
    final = RunDir(tmp_path / "eval").final.benchmark("open_llm")
    done = {t: final.marker(f"task_{t}") for t in two}
    assert [t for t, m in done.items() if not m.exists()] == ["winogrande_local"]
    before = {t: m.stat().st_mtime for t, m in done.items() if m.exists()}
    task_yaml.write_text(good)
    open_llm(tmp_path / "eval", tasks)
    assert {t: done[t].stat().st_mtime for t in before} == before  # the task that ran is not run again
    assert "open_llm/winogrande_local" in read_json(tmp_path / "eval" / "summary.json")


@pytest.mark.slow
def test_a_dataset_out_of_reach_stops_before_any_model_loads(tmp_path):
    folder = tmp_path / "tasks"
    write_tasks(folder)
    (folder / "arc_hub.yaml").write_text(f"include: {TASKS / 'arc/arc_challenge.yaml'}\ntask: arc_hub\n"
                                         "dataset_path: dno-test/no-such-dataset\n")
    proc = open_llm(tmp_path / "eval", [f"eval.open_llm.include_path={folder}", "eval.open_llm.include_defaults=false",
                                        "eval.open_llm.tasks=[{task:arc_hub,num_fewshot:0,metric:acc}]"], check=False)
    assert proc.returncode == 2
    assert "the data of task arc_hub could not be read" in proc.stderr and "no-such-dataset" in proc.stderr
    assert "eval.open_llm.include_path" in proc.stderr and not (tmp_path / "eval" / "final").exists()


def test_without_the_hub_the_loaded_libraries_go_offline_and_come_back(monkeypatch):
    """huggingface_hub and datasets read HF_HUB_OFFLINE when imported: the variables alone would leave an
    unreachable hub to a minute of retries per file (23 s of this module's out-of-reach test, before)."""
    import datasets.config
    import huggingface_hub.constants

    from dno.benchmarks import open_llm

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(open_llm, "hub_reachable", lambda: False)
    with open_llm.offline_unless_reachable():
        assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert not huggingface_hub.constants.is_offline_mode() and not datasets.config.HF_HUB_OFFLINE
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setattr(open_llm, "hub_reachable", lambda: True)  # a reachable hub is left alone
    with open_llm.offline_unless_reachable():
        assert not huggingface_hub.constants.is_offline_mode()


def test_an_unknown_task_or_a_malformed_entry_is_refused(tmp_path):
    from dno.benchmarks.open_llm import OpenLLM

    folder = tmp_path / "tasks"
    write_tasks(folder)
    with pytest.raises(ValueError, match=r"tasks\[0\] .* lacks metric"):
        OpenLLM(tasks=[{"task": "arc_challenge_local", "num_fewshot": 0}], include_path=str(folder)).check()
    with pytest.raises(ValueError, match="lm-eval knows no task arc_typo"):
        OpenLLM(tasks=[{"task": "arc_typo", "num_fewshot": 0, "metric": "acc"}], include_path=str(folder),
                include_defaults=False).check()
    both = OpenLLM(tasks=[{"task": "a", "num_fewshot": 0, "metric": "acc"}],
                   extra_tasks=[{"task": "b", "num_fewshot": 1, "metric": "acc"}])
    assert [t["task"] for t in both.tasks] == ["a", "b"]  # extra_tasks: one command-line item adds a task


def test_lm_evals_multiple_choice_log_likelihoods_are_our_sequence_logps(tmp_path):
    """The same items scored by lm-eval's Hugging Face model and by sequence_logps (dno's log-prob code): the
    log-likelihood of every choice agrees, so the choice each prefers and the accuracy are the same."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from dno.policy.load import load_tokenizer

    write_tasks(tmp_path / "tasks", n=16, seed=3)
    tokenizer = load_tokenizer(TOKENIZER, make_cfg().cache_dir)
    model = tiny_llama(len(tokenizer))
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    results = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
                                      tasks=["arc_challenge_local"], num_fewshot=2, task_manager=manager,
                                      log_samples=True, bootstrap_iters=0)
    chosen = []
    for sample in results["samples"]["arc_challenge_local"]:
        pairs = [encode_pair(tokenizer, context, continuation) for context, continuation in sample["arguments"]]
        with torch.no_grad():
            ours = sequence_logps(model, collate(pairs, tokenizer.pad_token_id or 0)).tolist()
        theirs = [r[0][0] for r in sample["resps"]]
        assert ours == pytest.approx(theirs, abs=1e-3)
        chosen.append(int(max(range(len(ours)), key=ours.__getitem__) == sample["target"]))
    assert sum(chosen) / len(chosen) == pytest.approx(results["results"]["arc_challenge_local"]["acc,none"])
    assert 0 < sum(chosen) < len(chosen)  # neither all right nor all wrong: the agreement says something


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split of (context, continuation) into tokens: a trailing space of the context moves to the
    continuation, the pair is encoded whole and the continuation is what follows the context's tokens."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    head = tokenizer.encode(context, add_special_tokens=False)
    return head, whole[len(head):]


@pytest.mark.slow
def test_every_iterate_of_a_finished_run(tmp_path):
    """dno-eval run_dir=RUN eval=[open_llm]: pi_1, pi_2 and pi_3 each into their own final/, Table 3's rows."""
    run_dir = tmp_path / "run"
    cfg = make_cfg(*SMOKE)
    from omegaconf import OmegaConf

    RunDir(run_dir).hydra_config.parent.mkdir(parents=True)
    OmegaConf.save(cfg, RunDir(run_dir).hydra_config)
    write_json(RunDir(run_dir).summary, {"final/model": "pi_3"})
    for t in (1, 2):
        model = tiny_llama(49152)
        torch.manual_seed(t)
        for w in model.parameters():
            w.data += torch.randn_like(w)
        model.save_pretrained(RunDir(run_dir).iteration(t).checkpoint)
    tasks = write_tasks(tmp_path / "tasks", n=4)
    tasks[2] = "eval.open_llm.tasks=[{task:arc_challenge_local,num_fewshot:0,metric:acc}]"
    dno_eval(*SMOKE, "eval=[open_llm]", f"run_dir={run_dir}", *tasks, "logger=none",
             f"hydra.run.dir={tmp_path / 'eval'}", timeout=600)
    scores = [read_json(RunDir(run_dir).iterate_final(t).summary)["open_llm/arc_challenge_local"] for t in (1, 2, 3)]
    summary = read_json(tmp_path / "eval" / "summary.json")
    assert [summary[f"pi_{t}/open_llm/arc_challenge_local"] for t in (1, 2, 3)] == scores


@pytest.mark.slow
@pytest.mark.experiment
def test_the_cost_script_times_the_six_tasks_on_stand_ins():
    out = run([".venv/bin/python", "experiments/open_llm_cost.py", "items=2", "model=tiny_random"], timeout=900).stdout
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", out, flags=re.MULTILINE)
    assert [r[0] for r in rows] == ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]
    assert [int(r[1]) for r in rows] == [25, 10, 5, 0, 5, 5] and "on 2 stand-in items per task" in out
