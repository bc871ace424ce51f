"""The (v1) Open LLM Leaderboard (`eval=open_llm`), the paper's Table 3, through EleutherAI's
lm-evaluation-harness (`lm_eval.simple_evaluate`), not a re-implementation of its tasks.

The six tasks with the leaderboard's settings: ARC-Challenge 25-shot acc_norm, HellaSwag 10-shot acc_norm,
MMLU 5-shot acc, TruthfulQA (mc2) 0-shot, WinoGrande 5-shot acc, GSM8K 5-shot exact match (strict). Each is
an entry `{task, num_fewshot, metric}` of `eval.open_llm.tasks`, so another task is one more entry
(`eval.open_llm.extra_tasks=[{task:ifeval,num_fewshot:0,metric:prompt_level_strict_acc}]` adds one); a
folder of the user's own lm-eval task YAMLs (`include_path`) adds tasks, e.g. the same tasks on local files
(`dataset_path: json`, `dataset_kwargs: {data_files: ...}`) where the hub is out of reach.

Each task is its own resumable stage in final/open_llm/<task>/ with lm-eval's own results JSON (and its
per-item samples) as lm-eval writes them; a task that fails is named with its reason and the others go on,
then the stage fails (exit 3) and the same command redoes only the failed ones. The model is the evaluated
policy as loaded by the run (its dtype), through lm-eval's Hugging Face model with the run's
`sampling.batch_size`, or lm-eval's vLLM model on the checkpoint (`backend=vllm`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dno.benchmarks.base import EvalError, Evaluated
from dno.runtime.files import write_json, write_text
from dno.runtime.layout import BenchmarkDir
from dno.runtime.stages import run_stage

log = logging.getLogger(__name__)

LEADERBOARD = (
    {"task": "arc_challenge", "num_fewshot": 25, "metric": "acc_norm"},
    {"task": "hellaswag", "num_fewshot": 10, "metric": "acc_norm"},
    {"task": "mmlu", "num_fewshot": 5, "metric": "acc"},
    {"task": "truthfulqa_mc2", "num_fewshot": 0, "metric": "acc"},
    {"task": "winogrande", "num_fewshot": 5, "metric": "acc"},
    {"task": "gsm8k", "num_fewshot": 5, "metric": "exact_match,strict-match"},
)
BACKENDS = ("hf", "vllm")


def metric_key(metric: str) -> str:
    """lm-eval's results key of a metric: `acc` is `acc,none` (no filter); `exact_match,strict-match` as is."""
    return metric if "," in metric else f"{metric},none"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (HF_HUB_OFFLINE=1 says it does not)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable():
    """Without the hub, datasets are read from the local cache at once, not after a minute of retries each.

    huggingface_hub and datasets read HF_HUB_OFFLINE once, when imported (huggingface_hub.constants,
    datasets.config), so the environment variables alone do not reach them once they are loaded: their module
    flags are set too, as datasets' own tests do, and everything is restored afterwards."""
    if hub_reachable():
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    flags = [(huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
             (datasets.config, "HF_DATASETS_OFFLINE")]
    saved_flags = [getattr(module, name) for module, name in flags]
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(flags, saved_flags, strict=True):
            setattr(module, name, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class OpenLLM:
    """`eval=open_llm` (conf/eval/open_llm.yaml): the keys of that file, under `eval.open_llm.`."""

    tasks: tuple = LEADERBOARD  # entries {task, num_fewshot, metric}
    extra_tasks: tuple = ()  # more entries, after `tasks` (one command-line item adds a task)
    include_path: str | None = None  # a folder of your own lm-eval task YAMLs
    include_defaults: bool = True  # lm-eval's own tasks too (false: only include_path's, found faster)
    limit: int | None = None  # items per task (a quick check, not comparable)
    batch_size: int | str = 8  # lm-eval's (batch x length x vocabulary logits in memory); "auto" on a GPU
    backend: str = "hf"  # hf: lm-eval's Hugging Face model on the loaded policy; vllm: lm-eval's vLLM model
    bootstrap_iters: int = 100000  # lm-eval's, for the standard errors of metrics that are not means
    _manager: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(dict(t) for t in [*self.tasks, *self.extra_tasks]))
        object.__setattr__(self, "extra_tasks", ())

    def check(self) -> None:
        """Every entry well formed and every task known to lm-eval, its data readable, before any model loads."""
        if self.backend not in BACKENDS:
            raise ValueError(f"eval.open_llm.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not self.tasks:
            raise ValueError("eval.open_llm.tasks is empty: give entries {task: NAME, num_fewshot: N, metric: NAME}")
        for i, entry in enumerate(self.tasks):
            missing = {"task", "num_fewshot", "metric"} - set(entry)
            if missing:
                raise ValueError(f"eval.open_llm.tasks[{i}] ({entry}) lacks {', '.join(sorted(missing))}: each entry "
                                 "is {task: NAME, num_fewshot: N, metric: NAME}")
        if self.include_path and not Path(self.include_path).is_dir():
            raise ValueError(f"eval.open_llm.include_path={self.include_path}: no such folder")
        known = set(self.manager().all_tasks)
        unknown = [t["task"] for t in self.tasks if t["task"] not in known]
        if unknown:
            raise ValueError(f"eval.open_llm.tasks: lm-eval knows no task {', '.join(unknown)} (its own tasks"
                             f"{' and those in ' + self.include_path if self.include_path else ''})")
        for entry in self.tasks:
            self.load_data(entry["task"])

    def manager(self):
        """lm-eval's TaskManager (its index of task YAMLs takes seconds to build: built once)."""
        if "tm" not in self._manager:
            from lm_eval.tasks import TaskManager

            self._manager["tm"] = TaskManager(include_path=self.include_path, include_defaults=self.include_defaults)
        return self._manager["tm"]

    def load_data(self, task: str) -> None:
        """The task's datasets, loaded (and cached) now: a missing one is an error naming it and what to do."""
        try:
            with offline_unless_reachable():
                self.manager().load([task])
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds; one message names the task and data
            raise ValueError(f"eval.open_llm: the data of task {task} could not be read ({type(e).__name__}: "
                             f"{str(e)[:300]}). Without the hub, put the task's files on disk and name them in a task "
                             "YAML (dataset_path: json, dataset_kwargs: {data_files: ...}) in a folder given as "
                             "eval.open_llm.include_path (see the README).") from None

    def run(self, target: Evaluated, out: BenchmarkDir) -> dict:
        """Each task a stage; the summary `open_llm/<task>` (its metric), `open_llm/avg` when every task ran."""
        import lm_eval

        lm = functools.cache(lambda: self.model(target))
        scores, failed = {}, {}
        for entry in self.tasks:
            task = entry["task"]
            try:
                scores |= run_stage(out, f"task_{task}", lambda e=entry: self.evaluate(lm(), e, out),
                                    (out.task_results(task),))
            except Exception as e:  # noqa: BLE001 - a task that fails does not stop the others
                log.error("open_llm: task %s failed: %s: %s", task, type(e).__name__, e)
                failed[task] = f"{type(e).__name__}: {str(e)[:300]}"
        if failed:
            raise EvalError("open_llm: " + "; ".join(f"task {t} failed ({why})" for t, why in failed.items()) +
                            f". The other tasks' results are in {out.path}; the same command redoes only the failed "
                            "ones.")
        values = [scores[f"open_llm/{t['task']}"] for t in self.tasks]
        summary = {**{k: v for k, v in scores.items() if not k.startswith("time/")},
                   "open_llm/avg": sum(values) / len(values), "open_llm/lm_eval_version": lm_eval.__version__,
                   "open_llm/tasks": ", ".join(f"{t['task']} {t['num_fewshot']}-shot {t['metric']}"
                                               for t in self.tasks),
                   **({"open_llm/limit": f"{self.limit} items per task: not comparable"} if self.limit else {})}
        write_json(out.summary, summary)
        return summary

    def model(self, target: Evaluated):
        """lm-eval's model of the evaluated policy."""
        batch_size = self.batch_size
        if self.backend == "vllm":
            from lm_eval.models.vllm_causallms import VLLM

            if target.checkpoint is None:
                raise EvalError("eval.open_llm.backend=vllm evaluates a checkpoint on disk: pi_1 is the configured "
                                "model; give its path as checkpoint= or use backend=hf")
            return VLLM(pretrained=str(target.checkpoint), batch_size=batch_size)
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=target.policy(), tokenizer=target.tokenizer, batch_size=batch_size)

    def evaluate(self, lm, entry: dict, out: BenchmarkDir) -> dict:
        """One task through lm_eval.simple_evaluate; lm-eval's results and samples files into its folder."""
        import lm_eval
        from lm_eval.loggers import EvaluationTracker
        from lm_eval.utils import handle_non_serializable

        task, key = entry["task"], metric_key(entry["metric"])
        tracker = EvaluationTracker(output_path=str(out.task(task)))
        with offline_unless_reachable():
            results = lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=entry["num_fewshot"],
                                              limit=self.limit, task_manager=self.manager(), log_samples=True,
                                              evaluation_tracker=tracker, bootstrap_iters=self.bootstrap_iters)
        tracker.save_results_aggregated(results=results, samples=results["samples"])
        for name, samples in results["samples"].items():
            tracker.save_results_samples(task_name=name, samples=samples)
        kept = {k: v for k, v in results.items() if k != "samples"}
        write_text(out.task_results(task), json.dumps(kept, indent=1, default=handle_non_serializable))
        found = results["results"].get(task, {})
        if key not in found:
            raise ValueError(f"lm-eval reported no {entry['metric']} for {task} (it reported "
                             f"{', '.join(k for k in found if 'stderr' not in k) or 'nothing'})")
        return {f"open_llm/{task}": float(found[key]),
                f"open_llm/{task}_version": str(results["versions"].get(task, "?")),
                f"open_llm/{task}_n": int(results.get("n-samples", {}).get(task, {}).get("effective", 0))}
