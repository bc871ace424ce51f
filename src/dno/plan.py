"""A run's bill before it is paid (`dno-run ... plan=true`), and the plan held against what was paid.

Per iteration and in total: prompts, samples, the judge's requests (those the judge cache already answers
taken off, where the iteration's samples exist), its prompt and completion tokens, their cost at the direct and
at the Batch API's price, the validation judge's requests and cost, and the sampling and training hours from a
dno-bench report of the same model and device when one is given (`plan_inputs.bench`); then the final stage's
judge requests of every benchmark of `eval=[...]` (`final`), and a grand total of every stage (`total.requests`,
`total.usd`, and `total.usd_batch`: the same bill with `oracle.batch=true`, whatever oracle.batch is now; a
benchmark with its own judge at its own `eval.<name>.batch`). Tokens are characters / 4 (OpenAI's rule of thumb
for English: the judge's tokenizer is not the policy's). Every estimate says where it comes from:
- the instruction's length: the iteration's own prompts (or `plan_inputs.instruction_chars`);
- an answer's length: the samples already drawn (a resumed run), else `plan_inputs.answer_chars`, else the
  data's teacher answers, else `sampling.max_new_tokens` x 4 characters (an upper bound);
- the judge's tokens per request: those it used in earlier iterations (a resumed run), else the template's
  text with the lengths above and `plan_inputs.judge_tokens_per_candidate` completion tokens per candidate.
`plan_inputs.prompts_per_iteration` plans without reading the data (a setting too large to hold, e.g. the
paper's 600k prompts): every length then comes from plan_inputs.

A committee's plan is its members' plans added up. dno-run writes the plan made at its first start into plan.json
and the plan of every later start (a resume) into plans/plan_<n>.json (`save_plan`), and each iteration's log
holds the planned judge cost and tokens (`plan/judge_usd`, `plan/judge_prompt_tokens`, ...) beside the paid ones
(`oracle/usd`, ...), and the remaining iterations planned again from what this one measured
(`plan/remaining_judge_usd`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Samples, read_rows

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Judge:
    """What one question costs a judge: requests per prompt with n candidates, template characters, prices."""

    kind: str  # listwise, pairwise or local (no API: costs nothing)
    prices: tuple[float, float]  # USD per million prompt and completion tokens
    batch_factor: float
    template_chars: int  # the question's fixed text (system prompt and layout) for 2 candidates
    per_candidate_chars: int  # what each more candidate adds to the layout
    completion_per_candidate: float  # judge tokens per candidate (listwise); pairwise answers one token

    def requests(self, candidates: int) -> int:
        if self.kind == "local":
            return 0
        return 1 if self.kind == "listwise" else 2 * math.comb(candidates, 2)

    def tokens(self, candidates: int, instruction: float, answer: float) -> tuple[float, float]:
        """(prompt, completion) tokens of one request about `candidates` answers."""
        if self.kind == "pairwise":
            return (self.template_chars + instruction + 2 * answer) / CHARS_PER_TOKEN, 1.0
        chars = self.template_chars + (candidates - 2) * self.per_candidate_chars + instruction + candidates * answer
        return chars / CHARS_PER_TOKEN, self.completion_per_candidate * candidates

    def usd(self, prompt: float, completion: float) -> float:
        return (prompt * self.prices[0] + completion * self.prices[1]) / 1e6


def judges_of(oracle, completion_per_candidate: float) -> list[Judge]:
    """The plan's view of an oracle: one Judge, or a committee's members' (each asked every question)."""
    members = getattr(oracle, "members", None)
    if members is not None:
        return [j for m in members for j in judges_of(m, completion_per_candidate)]
    return [judge_of(oracle, completion_per_candidate)]


def judge_of(oracle, completion_per_candidate: float) -> Judge:
    """The plan's view of an oracle: an API judge's template and prices, or a local one (free)."""
    api = getattr(oracle, "api", None)
    billed_as = getattr(oracle, "bill_as", None)  # the rules judge billed as a paid listwise one
    if api is None and billed_as is None:
        return Judge("local", (0.0, 0.0), 1.0, 0, 0, 0.0)
    if oracle.is_listwise:
        from dno.oracles.openai_listwise import SYSTEM, user_message

        two, three = (len(SYSTEM) + len(user_message("", [""] * n)) for n in (2, 3))
        if api is None:
            from dno.oracles.prices import price_of

            price = price_of(billed_as)
            return Judge("listwise", (price.input, price.output), 1.0, two, three - two,
                         oracle.bill_tokens_per_candidate)
        return Judge("listwise", api.prices, api.options.batch_price_factor, two, three - two, completion_per_candidate)
    from dno.oracles.openai_pairwise import SYSTEM, user_message

    return Judge("pairwise", api.prices, api.options.batch_price_factor, len(SYSTEM) + len(user_message("", "", "")),
                 0, 1.0)


def measured(run: RunDir) -> dict:
    """What earlier iterations of this run measured: answer characters, judge tokens per request, pairs."""
    rows = read_jsonl(run.metrics) if run.metrics.exists() else []
    answers = [len(r) for t in run.iterations() if run.iteration(t).samples.exists()
               for s in read_rows(run.iteration(t).samples, Samples) for r in s.responses]
    asked = sum(r.get("oracle/requests", 0) for r in rows)
    found = {"answer_chars": statistics.fmean(answers)} if answers else {}
    if asked:
        found |= {"judge_prompt_tokens": sum(r.get("oracle/prompt_tokens", 0) for r in rows) / asked,
                  "judge_completion_tokens": sum(r.get("oracle/completion_tokens", 0) for r in rows) / asked}
    prompts = sum(r.get("data/prompts", 0) for r in rows)
    if prompts:
        found["pairs_per_prompt"] = sum(r.get("pairs/new", 0) for r in rows) / prompts
    return found


def cached_questions(oracle, run: RunDir, t: int) -> int:
    """How many of iteration t's judge questions the cache already answers (listwise API judges, samples on
    disk): a resumed plan does not count them again."""
    d = run.iteration(t)
    api = getattr(oracle, "api", None)
    if api is None or api.cache is None or not oracle.is_listwise or not d.samples.exists():
        return 0
    from dno.oracles.openai_listwise import STRUCTURED_OUTPUTS, response_format
    from dno.stages.records import Judged

    mode = oracle.mode or api.remembered("structured_output") or STRUCTURED_OUTPUTS[0]
    hits = 0
    for s in read_rows(d.samples, Samples):
        candidates = Judged.candidates_of(s)[0]
        messages, _ = oracle.question(s.prompt, candidates)
        hits += api.cached(api.key(messages, {**oracle.params(), **response_format(mode, len(candidates))})) is not None
    return hits


def lengths(iteration_prompts: list, inputs: dict, found: dict, max_new_tokens: int) -> dict:
    """The instruction and answer lengths (characters) the plan uses, each with where it comes from."""
    if inputs.get("instruction_chars"):
        instruction = (float(inputs["instruction_chars"]), "plan_inputs.instruction_chars")
    else:
        texts = [p.as_text() for part in iteration_prompts for p in part]
        instruction = (statistics.fmean(map(len, texts)), "the data's prompts") if texts else (0.0, "no prompt")
    teachers = [len(p.teacher) for part in iteration_prompts for p in part if p.teacher]
    if "answer_chars" in found:
        answer = (found["answer_chars"], "this run's samples so far")
    elif inputs.get("answer_chars"):
        answer = (float(inputs["answer_chars"]), "plan_inputs.answer_chars")
    elif teachers:
        answer = (statistics.fmean(teachers), "the data's teacher answers")
    else:
        answer = (float(max_new_tokens * CHARS_PER_TOKEN), "sampling.max_new_tokens x 4 characters (upper bound)")
    return {"instruction_chars": instruction, "answer_chars": answer}


def hours(bench: dict | None, samples: float, answer_tokens: float, train_tokens: float) -> dict:
    """Sampling and training hours at a dno-bench report's throughputs (None: say it is missing)."""
    if not bench:
        return {}
    sampling = bench["sampling"][-1] if isinstance(bench["sampling"], list) else bench["sampling"]
    tps = sampling.get("ours_tokens_per_s") or sampling.get("dno_tokens_per_s")
    update = train_tokens / bench["update"]["tokens_per_s"] + train_tokens / bench["reference"]["tokens_per_s"]
    return {"sampling_hours": samples * answer_tokens / tps / 3600, "training_hours": update / 3600}


def hours_source(bench: dict | None, path: str | None, model: str) -> str:
    """Where the plan's hours come from, and a warning when the bench measured another model."""
    if not bench:
        return "missing: give plan_inputs.bench=PATH (a dno-bench report of this model and device)"
    measured_model = bench.get("model", "?")
    same = "" if measured_model == model else (f"; WARNING: it measured {measured_model}, not {model}: its hours are "
                                               "not this run's (measure dno-bench with this model and device)")
    return f"dno-bench report {path} ({bench['machine'].get('device', '?')}, {measured_model}){same}"


def iteration_row(judges: list[Judge], n: int, per_request: list[tuple[float, float]], cached: int,
                  extra: dict) -> dict:
    """One iteration's judge bill: `n` prompts, each judge's (prompt, completion) tokens per request, `cached`
    questions the (first) judge's cache answers."""
    requests = paid_requests = prompt = completion = usd = usd_batch = 0.0
    for k, (judge, tokens) in enumerate(zip(judges, per_request, strict=True)):
        asked = n * judge.requests(extra["candidates"])
        paid = max(asked - (cached if k == 0 else 0), 0)
        cost = judge.usd(paid * tokens[0], paid * tokens[1])
        requests, paid_requests = requests + asked, paid_requests + paid
        prompt, completion = prompt + paid * tokens[0], completion + paid * tokens[1]
        usd, usd_batch = usd + cost, usd_batch + cost * judge.batch_factor
    return {"prompts": n, "samples": n * extra["k"], "judge_requests": round(requests), "judge_requests_cached": cached,
            "judge_prompt_tokens": round(prompt), "judge_completion_tokens": round(completion), "judge_usd": usd,
            "judge_usd_batch": usd_batch}


def final_rows(benchmarks: dict, judges: list[Judge], n_test: int, instruction: float, answer: float) -> dict:
    """Each benchmark's judge bill. A benchmark says what it asks (`plan_questions`): requests, and either
    `oracle: True` (the run's judges, on `candidates` answers) or its own judge's prompt characters, completion
    tokens and client (`api`)."""
    rows = {}
    for name, benchmark in (benchmarks or {}).items():
        ask = getattr(benchmark, "plan_questions", None)
        q = ask(n_test, instruction, answer) if ask else {"requests": 0}
        if q.get("oracle"):
            n = q["requests"]
            tokens = [j.tokens(q["candidates"], instruction, answer) for j in judges]
            row = iteration_row(judges, n, tokens, 0, {"k": 0, "candidates": q["candidates"]})
            rows[name] = {"judge": "the run's oracle", **{k.removeprefix("judge_"): v for k, v in row.items()
                                                           if k.startswith("judge_") and k != "judge_requests_cached"}}
            continue
        api = q.get("api")
        prompt, completion = q["requests"] * q.get("prompt_chars", 0) / CHARS_PER_TOKEN, \
            q["requests"] * q.get("completion_tokens", 0)
        usd = None
        if api is not None and not api.price_error:
            usd = (prompt * api.prices[0] + completion * api.prices[1]) / 1e6
        rows[name] = {"judge": api.model if api is not None else "none", "requests": q["requests"],
                      "prompt_tokens": round(prompt), "completion_tokens": round(completion), "usd": usd,
                      "usd_batch": None if usd is None else usd * (api.options.batch_price_factor
                                                                   if api.options.batch else 1.0),
                      **({"price": api.price_error} if api is not None and api.price_error else {})}
    return rows


def validation_plan(judges: list[Judge], n_val: int, instruction: float, answer: float) -> dict:
    """An iteration's validation: pi_{t+1}'s answer against pi_1's and pi_t's, one judgement of the three
    (listwise) or the two pairs in both orders (pairwise)."""
    val = iteration_row(judges, n_val, [j.tokens(3 if j.kind == "listwise" else 2, instruction, answer)
                                        for j in judges], 0, {"k": 0, "candidates": 3})
    requests = sum(n_val * (1 if j.kind == "listwise" else 4 if j.kind == "pairwise" else 0) for j in judges)
    scale = requests / val["judge_requests"] if val["judge_requests"] else 0.0  # pairwise: 2 pairs, not 3
    return {"requests_per_iteration": requests, "usd_per_iteration": val["judge_usd"] * scale,
            "usd_batch_per_iteration": val["judge_usd_batch"] * scale,
            "prompt_tokens_per_iteration": round(val["judge_prompt_tokens"] * scale),
            "completion_tokens_per_iteration": round(val["judge_completion_tokens"] * scale)}


def teacher_plan(judges: list[Judge], n: int, prompts: int, instruction: float, answer: float) -> dict:
    """The best-of-n teacher (n > 0) judges n samples of pi_1 per prompt, once."""
    if not n:
        return {"teacher_requests": 0, "teacher_usd": 0.0, "teacher_usd_batch": 0.0}
    row = iteration_row(judges, prompts, [j.tokens(n, instruction, answer) for j in judges], 0,
                        {"k": 0, "candidates": n})
    return {"teacher_requests": row["judge_requests"], "teacher_usd": row["judge_usd"],
            "teacher_usd_batch": row["judge_usd_batch"]}


def grand_total(total: dict, final: dict) -> dict:
    """Every stage's paid requests and USD added up: `requests`, `usd` (direct), and `usd_batch` (the run's judge
    through the Batch API, as oracle.batch=true asks it; a benchmark's own judge as its eval.<name>.batch says)."""
    final_usd = [r["usd"] for r in final.values()]
    out = {"final_requests": sum(r["requests"] for r in final.values()),
           "final_usd": sum(u for u in final_usd if u is not None),
           "final_usd_batch": sum(r["usd_batch"] or 0.0 for r in final.values())}
    out["requests"] = round(total.get("judge_requests", 0) - total.get("judge_requests_cached", 0)
                            + total["validation_requests"] + total["teacher_requests"] + out["final_requests"])
    out["usd"] = total.get("judge_usd", 0.0) + total["validation_usd"] + total["teacher_usd"] + out["final_usd"]
    out["usd_batch"] = (total.get("judge_usd_batch", 0.0) + total["validation_usd_batch"]
                        + total["teacher_usd_batch"] + out["final_usd_batch"])
    if not all(u is not None for u in final_usd):
        out["usd_incomplete"] = "a benchmark's judge has no price: see final"
    return out


def save_plan(run_dir: Path, plan: dict) -> Path:
    """plan.json at a run's first start; plans/plan_<n>.json at the n-th (the first is never overwritten)."""
    from dno.runtime.files import write_json

    run = RunDir(run_dir)
    if not run.plan.exists():
        write_json(run.plan, plan)
        return run.plan
    n = 2 + (len(list(run.plans.glob("plan_*.json"))) if run.plans.exists() else 0)
    path = run.plans / f"plan_{n}.json"
    write_json(path, plan)
    return path


def routed_shares(router_cfg, run: RunDir, iterations: int) -> dict:
    """The share of each iteration's prompts the paid judge answers (dno.stages.route.RouterOptions.planned_shares),
    with what this run measured so far (router/paid_share in metrics.jsonl)."""
    from dno.stages.route import RouterOptions

    measured_shares = [r["router/paid_share"] for r in (read_jsonl(run.metrics) if run.metrics.exists() else [])
                       if "router/paid_share" in r]
    options = RouterOptions.of(router_cfg)
    shares, source = options.planned_shares(measured_shares, iterations)
    router = {"kind": options.kind} | ({"paid_share_after_iteration_1": shares[-1], "source": source}
                                       if options.enabled else {})
    return {"shares": shares, "router": router}


def make_plan(cfg, oracle, teacher, splits, run_dir: Path, benchmarks: dict | None = None) -> dict:
    """The plan of the run `cfg` (module docstring); `splits` None when plan_inputs.prompts_per_iteration is set;
    `benchmarks`: the final stage's (eval=[...]) objects."""
    inputs = dict(cfg.get("plan_inputs") or {})
    run, k, iterations = RunDir(run_dir), cfg.schedule.samples_per_prompt, cfg.schedule.iterations
    found = measured(run)
    judges = judges_of(oracle, inputs.get("judge_tokens_per_candidate") or 140)
    judge = judges[0]
    parts = [[] for _ in range(iterations)] if splits is None else splits.iterations
    counts = [inputs["prompts_per_iteration"]] * iterations if splits is None else [len(p) for p in parts]
    every = getattr(teacher, "answers_every_prompt", False)
    share = inputs.get("teacher_share")
    if share is None:
        with_teacher = [p.teacher is not None for part in parts for p in part]
        share = 1.0 if every else (statistics.fmean(with_teacher) if with_teacher else 0.0)
    sizes = lengths(parts, inputs, found, cfg.sampling.max_new_tokens)
    instruction, answer = sizes["instruction_chars"][0], sizes["answer_chars"][0]
    candidates = k + round(share)
    if "judge_prompt_tokens" in found and len(judges) == 1:
        per_request = [(found["judge_prompt_tokens"], found["judge_completion_tokens"])]
        source = "measured in this run's earlier iterations"
    else:
        per_request = [j.tokens(candidates, instruction, answer) for j in judges]
        source = "the judge's template with the lengths above"
    bench = read_json(Path(inputs["bench"])) if inputs.get("bench") else None
    pairs = found.get("pairs_per_prompt") or inputs.get("pairs_per_prompt") or math.comb(candidates, 2)
    pairs_source = ("measured" if "pairs_per_prompt" in found else "plan_inputs.pairs_per_prompt"
                    if inputs.get("pairs_per_prompt") else "every pair of the candidates (upper bound)")
    routed = routed_shares(cfg.get("router"), run, iterations)
    rows = []
    for t, n in enumerate(counts, start=1):
        row = iteration_row(judges, math.ceil(n * routed["shares"][t - 1]), per_request,
                            cached_questions(oracle, run, t), {"k": k, "candidates": candidates})
        row |= {"prompts": n, "samples": n * k, "paid_share": routed["shares"][t - 1]}
        train_tokens = n * pairs * 2 * (instruction + answer) / CHARS_PER_TOKEN
        rows.append({"iteration": t, **row, **hours(bench, n * k, answer / CHARS_PER_TOKEN, train_tokens)})
    n_val = inputs.get("val_prompts") or (len(splits.val) if splits is not None else cfg.schedule.val_prompts)
    validation = validation_plan(judges, n_val, instruction, answer)
    total = {key: sum(r[key] for r in rows) for key in rows[0] if key != "iteration"} if rows else {}
    total |= {f"validation_{k}": validation[f"{k}_per_iteration"] * iterations
              for k in ("requests", "usd", "usd_batch")}
    total |= teacher_plan(judges, getattr(teacher, "n", 8) if every else 0, sum(counts), instruction, answer)
    n_test = inputs.get("test_prompts") or (len(splits.test) if splits is not None else cfg.schedule.test_prompts)
    final = final_rows(benchmarks, judges, n_test, instruction, answer)
    total |= grand_total(total, final)
    model = getattr(getattr(oracle, "api", None), "model", None) or (
        f"{type(oracle).__name__} billed as {oracle.bill_as}" if getattr(oracle, "bill_as", None)
        else type(oracle).__name__)
    return {"judge": {"kind": judge.kind, "model": model, "price_per_1m": list(judge.prices),
                      "batch_price_factor": judge.batch_factor, "judges": len(judges)},
            "candidates_per_prompt": candidates, "teacher_share": share, "router": routed["router"],
            "estimates": {**{k_: {"value": v, "source": s} for k_, (v, s) in sizes.items()},
                          "judge_tokens_per_request": {"value": list(per_request[0]), "source": source},
                          "pairs_per_prompt": {"value": pairs, "source": pairs_source}},
            "hours_from": hours_source(bench, inputs.get("bench"), cfg.model.name),
            "iterations": rows, "validation": validation, "final": final, "total": total}


def plan_table(plan: dict) -> str:
    """The plan as a terminal table, then where its estimates come from."""
    lines = [f"judge {plan['judge']['model']} ({plan['judge']['kind']}), ${plan['judge']['price_per_1m'][0]:g} and "
             f"${plan['judge']['price_per_1m'][1]:g} per million prompt and completion tokens, the Batch API at "
             f"{plan['judge']['batch_price_factor']:g}x; {plan['candidates_per_prompt']} candidates per prompt", "",
             "| iteration | prompts | samples | judge requests (cached) | prompt tokens | completion tokens | "
             "direct USD | batch USD | sampling h | training h |", "|---" * 10 + "|"]
    for r in [*plan["iterations"], {"iteration": "total", **plan["total"]}]:
        h = [f"{r[k]:.1f}" if k in r else "-" for k in ("sampling_hours", "training_hours")]
        lines.append(f"| {r['iteration']} | {r['prompts']:,} | {r['samples']:,} | {r['judge_requests']:,} "
                     f"({r['judge_requests_cached']:,}) | {r['judge_prompt_tokens']:,} | "
                     f"{r['judge_completion_tokens']:,} | {r['judge_usd']:,.2f} | {r['judge_usd_batch']:,.2f} | "
                     f"{h[0]} | {h[1]} |")
    router = plan.get("router", {})
    if router.get("kind", "none") != "none":
        share = router["paid_share_after_iteration_1"]
        lines += ["", f"router={router['kind']}: the paid judge answers {share:.0%} of the prompts from iteration 2 on "
                      f"({router['source']}); the student answers the rest, free"]
    lines += ["", f"validation: {plan['validation']['requests_per_iteration']:,} judge requests per iteration, "
                  f"${plan['validation']['usd_per_iteration']:,.2f} direct"]
    for name, r in plan.get("final", {}).items():
        usd = "no price" if r["usd"] is None else f"${r['usd']:,.2f} direct"
        lines.append(f"final {name}: {r['requests']:,} judge requests ({r['judge']}), {usd}")
    t = plan["total"]
    lines += [f"total: {t['requests']:,} paid judge requests, ${t['usd']:,.2f} direct, ${t['usd_batch']:,.2f} through "
              "the Batch API (oracle.batch=true)",
              f"hours: {plan['hours_from']}",
              "estimates: " + "; ".join(f"{k} {json.dumps(v['value'])} ({v['source']})"
                                        for k, v in plan["estimates"].items())]
    return "\n".join(lines)


def plan_metrics(plan: dict, t: int, paid: dict) -> dict:
    """The plan's iteration t, logged beside what was paid (`plan/...` and `oracle/...`), and the iterations left
    planned again with the judge tokens per request this iteration measured (`plan/remaining_judge_usd`)."""
    rows = plan.get("iterations", [])
    if not rows or (plan["judge"]["kind"] == "local" and "sampling_hours" not in rows[0]):
        return {}  # a local judge costs nothing: nothing to hold against
    row = rows[t - 1] if t <= len(rows) else {}
    out = {f"plan/{k}": v for k, v in row.items() if k.startswith("judge_") or k.endswith("_hours")}
    asked = paid.get("oracle/requests", 0)
    if asked and plan["judge"]["kind"] != "local":
        prompt, completion = (paid.get(f"oracle/{k}_tokens", 0) / asked for k in ("prompt", "completion"))
        price = plan["judge"]["price_per_1m"]
        left = sum(r["judge_requests"] - r["judge_requests_cached"] for r in rows[t:])
        out["plan/remaining_judge_usd"] = left * (prompt * price[0] + completion * price[1]) / 1e6
    return out

