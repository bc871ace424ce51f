"""Judges that run in process: a causal LM judging pairwise, and a reward model.

`local_judge`: any HF causal LM (SmolLM2 offline, Qwen on a GPU) is shown the instruction and two
outputs A and B in its chat template and asked which is better; P(A) is read from the next-token
probabilities of the two label tokens (renormalised over the two), batched. Both orders are
asked and averaged, as the API pairwise judge does, so position bias cancels.

`reward_model`: an HF sequence-classification model gives each (instruction, response) a reward
r; P(a > b) = sigmoid(r_a - r_b) (Bradley-Terry). The rewards are also kept as scores.

Both load their model on first use (not when the config is checked) and free nothing else: the
policy and the judge share the process.
"""

from __future__ import annotations

import math

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from dno.data import Prompt
from dno.oracles.base import Judgement, PairwiseOracle, all_pairs, both_orders, order_averaged, pair_judgement

JUDGE_TEMPLATE = ("Which output follows the instruction better: more helpful, correct, relevant and concise?\n\n"
                  "# Instruction\n{instruction}\n\n# Output A\n{a}\n\n# Output B\n{b}\n\n"
                  "Answer with one letter, A or B.")


def _device(device: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


class _Local:
    """A judge model in process.

    Args:
        model: the judge's model config (path, tokenizer, dtype, or random_init), as `model=` configs are.
        cache_dir: where a GGUF judge is de-quantised once.
        batch_size: questions per forward pass.
        max_response_tokens: answers are cut to this many tokens before they are judged.
        device: auto (CUDA when there is one), cpu or cuda.
    """

    auto_class = "AutoModelForCausalLM"

    def __init__(self, model, cache_dir: str, batch_size: int = 16, max_response_tokens: int = 256,
                 device: str = "auto") -> None:
        self.model_cfg = model if OmegaConf.is_config(model) else OmegaConf.create(model)
        self.cache_dir, self.batch_size, self.max_response_tokens = cache_dir, batch_size, max_response_tokens
        self.device = _device(device)
        self.model = self.tokenizer = None

    def check(self) -> None:
        from dno.policy.load import check_path

        if not (self.model_cfg.get("path") or self.model_cfg.get("random_init")):
            raise ValueError("oracle.model.path is empty: give the judge's hub id, directory or .gguf file")
        if self.model_cfg.get("path"):
            check_path(self.model_cfg.path)
        if self.batch_size < 1:
            raise ValueError(f"oracle.batch_size must be at least 1, got {self.batch_size}")

    def load(self):
        if self.model is None:
            import transformers

            from dno.policy.load import load_model, load_tokenizer

            self.tokenizer = load_tokenizer(self.model_cfg.get("tokenizer") or self.model_cfg.path, self.cache_dir)
            self.tokenizer.padding_side = "left"
            self.model = load_model(self.model_cfg, self.cache_dir, self.tokenizer,
                                    auto_class=getattr(transformers, self.auto_class)).to(self.device).eval()
        return self.model, self.tokenizer

    def truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_response_tokens else self.tokenizer.decode(ids[: self.max_response_tokens])

    @torch.no_grad()
    def forward(self, texts: list[str], desc: str):
        """Yields (batch start, model output) over left-padded batches of chat-formatted `texts`."""
        model, tok = self.load()
        for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, unit="batch", leave=False):
            enc = tok(texts[start : start + self.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            # positions count real tokens only, so a left-padded row scores as it would alone
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            yield start, model(**enc, position_ids=positions)


class LocalJudgeOracle(_Local, PairwiseOracle):
    def label_ids(self) -> tuple[int, int]:
        ids = [self.tokenizer("A", add_special_tokens=False)["input_ids"],
               self.tokenizer("B", add_special_tokens=False)["input_ids"]]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise ValueError(f"the judge's tokenizer does not encode A and B as two single tokens: {ids}")
        return ids[0][0], ids[1][0]

    def chat(self, instruction: str, a: str, b: str) -> str:
        content = JUDGE_TEMPLATE.format(instruction=instruction, a=self.truncate(a), b=self.truncate(b))
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)

    def p_first(self, questions: list[tuple[str, str, str]], desc: str) -> list[float]:
        """P(label A) for each (instruction, A, B), from the next-token logits of the two labels."""
        self.load()
        id_a, id_b = self.label_ids()
        texts = [self.chat(*q) for q in questions]
        out = []
        for _, output in self.forward(texts, desc):
            two = output.logits[:, -1, [id_a, id_b]].float()
            out.extend(torch.softmax(two, dim=-1)[:, 0].tolist())
        return out

    def compare_many(self, comparisons, desc):
        p = self.p_first(both_orders(comparisons), desc)
        return [pair_judgement(order_averaged(p[2 * k], p[2 * k + 1]), cost={"calls": 2},
                               detail={"p_a_first": p[2 * k], "p_b_first": p[2 * k + 1]})
                for k in range(len(comparisons))]


class RewardModelOracle(_Local, PairwiseOracle):
    auto_class = "AutoModelForSequenceClassification"

    def rewards(self, items: list[tuple[Prompt, str]], desc: str = "reward model") -> list[float]:
        """The reward of each (prompt, answer): the answer as the assistant's turn after the prompt's messages."""
        _, tok = self.load()
        texts = [tok.apply_chat_template([*x.messages, {"role": "assistant", "content": self.truncate(y)}],
                                         tokenize=False) for x, y in items]
        out = []
        for _, output in self.forward(texts, desc):
            out.extend(output.logits[:, 0].float().tolist())
        return out

    def judge_many(self, items, pairs=None, desc="judging") -> list[Judgement]:
        flat = [(prompt, c) for prompt, candidates in items for c in candidates]
        rewards, out, k = self.rewards(flat, desc), [], 0
        for _, candidates in items:
            r, n = rewards[k : k + len(candidates)], len(candidates)
            k += n
            prefs: list[list[float | None]] = [[None] * n for _ in range(n)]
            for i, j in pairs if pairs is not None else all_pairs(n):
                prefs[i][j] = 1.0 / (1.0 + math.exp(-(r[i] - r[j])))
                prefs[j][i] = 1.0 - prefs[i][j]
            out.append(Judgement(scores=r, prefs=prefs, cost={"calls": n}))
        return out
