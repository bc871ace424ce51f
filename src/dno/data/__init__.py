"""Prompt sources (builtin, any `datasets` file or hub id) and the one type they all produce: `Prompt`.

A prompt is the conversation up to the model's turn, as chat messages: an optional system turn, then
user (and earlier assistant) turns, ending with a user turn. It goes whole through the chat
template, so a prompt with earlier turns (MT-Bench's second turn) is asked in its conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """One prompt of a prompt set, as every stage, oracle and file sees it.

    Attributes:
        id: stable within the prompt set (the data's id field, or a hash of the messages).
        messages: [{"role", "content"}, ...]: optional system turn, then turns ending with a user turn.
        teacher: the teacher's answer y_gold (the paper's GPT-4-Turbo answer), or None.
        meta: what the data says beyond the text, for judges that check it (the builtin set's `topic`,
            `keywords` and `constraints`); never shown to the policy.
    """

    id: str
    messages: list[dict]
    teacher: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        roles = [m.get("role") for m in self.messages]
        if not roles or roles[-1] != "user" or any(r not in ROLES for r in roles) or "system" in roles[1:]:
            raise ValueError(f"prompt {self.id}: the messages must be an optional system turn, then turns ending "
                             f"with a user turn (roles: {roles})")

    @classmethod
    def of(cls, id: str, instruction: str, system: str | None = None, **fields) -> Prompt:
        """A single-turn prompt: an instruction, with a system turn when given."""
        head = [{"role": "system", "content": system}] if system else []
        return cls(id, [*head, {"role": "user", "content": instruction}], **fields)

    @property
    def instruction(self) -> str:
        """The last user turn: what the model answers now."""
        return self.messages[-1]["content"]

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages[0]["role"] == "system" else None

    @property
    def turns(self) -> list[dict]:
        """The conversation without the system turn."""
        return self.messages[1:] if self.system is not None else self.messages

    def as_text(self) -> str:
        """The prompt as a judge reads it: the instruction, after the earlier turns when there are some."""
        if len(self.turns) == 1:
            return self.instruction
        earlier = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.turns[:-1])
        return f"{earlier}\n\n[user]\n{self.instruction}"

    def with_teacher(self, answer: str | None) -> Prompt:
        return replace(self, teacher=answer)

    def to_json(self) -> dict:
        return {"id": self.id, "messages": self.messages, "teacher": self.teacher, "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict) -> Prompt:
        unknown = set(obj) - {"id", "messages", "teacher", "meta"}
        if unknown or "id" not in obj or "messages" not in obj:
            raise ValueError(f"a prompt has the fields id, messages, teacher, meta; got {sorted(obj)}")
        return cls(obj["id"], obj["messages"], obj.get("teacher"), obj.get("meta") or {})
