"""Which tokens of a sequence the question router reads: the routing unit (docs/method.md §3).

The question router takes one decision per sequence from the evidence of some of its tokens.
Which tokens is what makes scoring agree with generation and keeps one chat turn from deciding
for the next:

- **The prompt, never the answer.** ``generate`` decides from the prompt alone; a forward over
  prompt + answer must decide the same way, so the answer tokens are never read. Where the prompt
  ends comes from ``prompt_lengths`` (explicit) or from ``labels`` (the positions before a row's
  first labelled token, HF's ignore index -100); a forward with neither treats the whole input as
  the prompt (what ``generate`` would do with that input).
- **The last user turn of a chat.** With a chat template, the unit is the prompt's last user turn
  (from its turn header to the prompt's end), so an earlier turn about a forget author does not
  route a later retain question to the forget expert. The header's token ids are found from the
  tokenizer (:func:`user_turn_marker`) and kept with the adapter; without them (no chat template,
  a model wrapped by hand) the unit is the whole prompt.
- **Follow-ups inherit.** A user turn with no subject of its own ("What else did this author
  write?") refers back; :mod:`alter.modeling.question_router` decides whether the last turn has one and,
  if not, takes the decision of the turn before it (:func:`turn_masks` gives every turn's mask).

Shapes: ``input_ids`` / ``attention_mask`` / masks ``[B, T]``; ``prompt_lengths`` ``[B]`` counts the
real prompt tokens of each row from its first real token (so left and right padding both work).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

IGNORE_INDEX = -100
_SENTINEL_A, _SENTINEL_B, _SENTINEL_C = "\u2460alpha\u2460", "\u2461beta\u2461", "\u2462gamma\u2462"


def user_turn_marker(tokenizer) -> Optional[List[int]]:
    """The token ids that open a user turn in ``tokenizer``'s chat template (ChatML: ``<|im_start|>user\\n``),
    or None without a chat template (or when the template's user header cannot be told apart).

    Found by rendering a two-turn chat with sentinel contents: the text between the assistant's
    answer and the second user message ends with the user header, and so does the text before the
    first user message; their longest common suffix (after the last end-of-turn) is the header."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL_A}, {"role": "assistant", "content": _SENTINEL_B},
             {"role": "user", "content": _SENTINEL_C}], tokenize=False)
    except Exception:                      # a template that refuses this shape: route by the whole prompt
        return None
    if not all(s in text for s in (_SENTINEL_A, _SENTINEL_B, _SENTINEL_C)):
        return None
    before_first = text[:text.index(_SENTINEL_A)]
    between = text[text.index(_SENTINEL_B) + len(_SENTINEL_B):text.index(_SENTINEL_C)]
    n = 0
    while n < min(len(before_first), len(between)) and before_first[-1 - n] == between[-1 - n]:
        n += 1
    header = between[len(between) - n:]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos in header:              # "<|im_end|>\n<|im_start|>user\n" -> "<|im_start|>user\n"
        header = header[header.rindex(eos) + len(eos):].lstrip("\n")
    if not header.strip():
        return None
    ids = tokenizer(header, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids] or None


# English words by which a turn refers back to someone named earlier ("What else did this author write?");
# "it" and "that" are left out: most questions use them without referring to a person
REFERRING_WORDS = ("this", "these", "those", "they", "them", "their", "theirs", "he", "him", "his", "she", "her",
                   "hers")


def referring_token_ids(tokenizer, words: Sequence[str] = REFERRING_WORDS) -> List[int]:
    """The ids of ``words`` that the tokenizer keeps as one token, in lower case and capitalised, with and
    without a leading space (how they appear inside and at the start of a question)."""
    ids = set()
    for w in words:
        for form in (w, w.capitalize()):
            for text in (form, " " + form):
                toks = tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(toks) == 1:
                    ids.add(int(toks[0]))
    return sorted(ids)


def prompt_lengths_from_labels(labels: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[B]``: the number of real tokens before each row's first labelled token (``labels != -100``).

    A row with no labelled token, or labelled from its first real token on (plain language
    modelling: no prompt), counts all its real tokens as prompt."""
    real = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    labelled = (labels != IGNORE_INDEX) & real
    before = (labelled.long().cumsum(dim=1) == 0) & real            # real tokens before the first label
    lengths = before.sum(dim=1)
    total = real.sum(dim=1)
    return torch.where((lengths == 0) | ~labelled.any(dim=1), total, lengths)


def prompt_mask(attention_mask: torch.Tensor, prompt_lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """``[B, T]`` bool: the real tokens that belong to each row's prompt (all real tokens without lengths)."""
    real = attention_mask.bool()
    if prompt_lengths is None:
        return real
    lengths = torch.as_tensor(prompt_lengths, device=real.device).reshape(-1)
    if lengths.shape[0] != real.shape[0]:
        raise ValueError(f"prompt_lengths has {lengths.shape[0]} entries for a batch of {real.shape[0]} rows")
    if (lengths < 1).any() or (lengths > real.sum(dim=1)).any():
        raise ValueError(f"prompt_lengths must be in [1, real tokens of the row]; got {lengths.tolist()} for rows "
                         f"of {real.sum(dim=1).tolist()} real tokens")
    rank = real.long().cumsum(dim=1)                                 # 1-based index among real tokens
    return real & (rank <= lengths[:, None])


def _marker_starts(input_ids: torch.Tensor, marker: Sequence[int]) -> torch.Tensor:
    """``[B, T]`` bool: positions where ``marker`` begins."""
    B, T = input_ids.shape
    m = len(marker)
    hit = torch.zeros(B, T, dtype=torch.bool, device=input_ids.device)
    if m == 0 or m > T:
        return hit
    windows = input_ids.unfold(1, m, 1)                              # [B, T - m + 1, m]
    target = torch.as_tensor(list(marker), device=input_ids.device)
    hit[:, :T - m + 1] = (windows == target).all(dim=-1)
    return hit


def turn_masks(input_ids: torch.Tensor, in_prompt: torch.Tensor, marker: Optional[Sequence[int]],
               max_turns: int = 4) -> List[torch.Tensor]:
    """The routing units of each row, last first: ``[last user turn, the one before, ...]``, each ``[B, T]``.

    A turn runs from its header to the next header (the last one to the prompt's end); only prompt
    tokens count. Rows with fewer turns get all-False masks for the missing ones. Without a marker,
    or in a row where the marker does not occur in the prompt, the row's one unit is its whole prompt."""
    if not marker:
        return [in_prompt]
    starts = _marker_starts(input_ids, marker) & in_prompt
    turn_index = starts.long().cumsum(dim=1)                         # 0 before the first header
    count = turn_index.amax(dim=1, keepdim=True)                     # [B, 1] user turns in the prompt
    masks = []
    for back in range(max_turns):
        wanted = count - back
        masks.append(in_prompt & (turn_index == wanted) & (wanted >= 1))
    no_turn = count.squeeze(1) == 0
    if no_turn.any():                                                # a raw prompt: the whole prompt is the unit
        masks[0] = torch.where(no_turn[:, None], in_prompt, masks[0])
    return masks
