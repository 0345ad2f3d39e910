"""Model-facing evaluators on toy models with known probabilities and on the tiny random Llama."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from alter.data.prompts import answer_ids, prompt_ids
from alter.data.schema import MCExample, QAExample
from alter.eval import (answer_log_likelihoods, evaluate_continuation, evaluate_fluency, evaluate_mc, evaluate_qa,
                        evaluate_tofu, generate_answers, next_token_logprobs)
from alter.eval.metrics import format_mc_prompt, harmonic_mean, rouge_l_recall


def QA(question, answer, domain="retain", paraphrased_answer=None, perturbed_answers=None):
    return QAExample(question, answer, domain, paraphrased_answer, perturbed_answers)


def MC(question, choices, answer, subject=None):
    return MCExample(question, list(choices), answer, subject)


class TableLM(nn.Module):
    """A causal LM whose next-token log-probabilities depend only on the current token:
    ``logits[b, t] = table[input_ids[b, t]]``. With all rows equal it is a unigram model, so the
    log-likelihood of any answer is a sum of known numbers. ``generate`` is a plain greedy loop
    with the Hugging Face call signature (it is not a transformers model)."""

    def __init__(self, table: torch.Tensor, eos_id: int):
        super().__init__()
        self.register_buffer("table", table)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a parameter (and a device)
        self.eos_id = eos_id

    def forward(self, input_ids=None, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids] + 0.0 * self.anchor)

    def generate(self, input_ids=None, attention_mask=None, max_new_tokens=8, do_sample=False, pad_token_id=0):
        assert do_sample is False
        seq = input_ids
        done = torch.zeros(seq.shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            nxt = self.forward(seq).logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            done |= nxt == self.eos_id
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        return seq


def tid(tok, ch):
    return tok.convert_tokens_to_ids(ch)


def unigram_lm(tok, probs):
    """Unigram TableLM: ``probs`` maps characters (or token ids) to probabilities, the rest is shared."""
    V = len(tok)
    p = torch.zeros(V, dtype=torch.float64)
    ids = {(k if isinstance(k, int) else tid(tok, k)): v for k, v in probs.items()}
    rest = (1.0 - sum(ids.values())) / (V - len(ids))
    p[:] = rest
    for i, v in ids.items():
        p[i] = v
    row = p.log().float()
    return TableLM(row.expand(V, V).clone(), tok.eos_token_id)


def bigram_lm(tok, successor, seed=0):
    """TableLM whose greedy next token after ``c`` is ``successor[c]`` (random distribution otherwise)."""
    V = len(tok)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V, V, generator=g)
    for cur, nxt in successor.items():
        cur_id = cur if isinstance(cur, int) else tid(tok, cur)
        nxt_id = nxt if isinstance(nxt, int) else tid(tok, nxt)
        table[cur_id, nxt_id] = table[cur_id].max() + 3.0
    return TableLM(torch.log_softmax(table, dim=-1), tok.eos_token_id)


# p(a) = 0.4, p(b) = 0.2, p(c) = 0.1, p(EOS) = 0.1: answer "a" -> P = exp(-mean NLL) = sqrt(.4 * .1) = 0.2
PROBS = {"a": 0.4, "b": 0.2, "c": 0.1}


@pytest.fixture()
def unigram(tiny_tokenizer):
    return unigram_lm(tiny_tokenizer, {**PROBS, tiny_tokenizer.eos_token_id: 0.1})


def geo(*ps):
    return math.prod(ps) ** (1.0 / len(ps))


def test_answer_log_likelihoods_known_probabilities(tiny_tokenizer, unigram):
    r = answer_log_likelihoods(unigram, tiny_tokenizer, ["q?", "another question?"], ["a", "ab"], batch_size=2,
                               return_tokens=True, progress=False)
    assert r["num_tokens"] == [2, 3]  # answer characters + EOS
    assert r["sum_nll"][0] == pytest.approx(-math.log(0.4 * 0.1), rel=1e-5)
    assert r["mean_nll"][1] == pytest.approx(-math.log(0.4 * 0.2 * 0.1) / 3, rel=1e-5)
    assert r["token_logprobs"][1] == pytest.approx([math.log(0.4), math.log(0.2), math.log(0.1)], rel=1e-5)
    assert r["greedy_match"][1] == [True, False, False]  # argmax is always "a"
    assert r["target_ids"][0] == [tid(tiny_tokenizer, "a"), tiny_tokenizer.eos_token_id]
    no_eos = answer_log_likelihoods(unigram, tiny_tokenizer, ["q?"], ["ab"], include_eos=False, progress=False)
    assert no_eos["num_tokens"] == [2]
    assert no_eos["mean_nll"][0] == pytest.approx(-math.log(0.4 * 0.2) / 2, rel=1e-5)


def test_evaluate_qa_probability_truth_ratio_by_hand(tiny_tokenizer, unigram):
    exs = [
        QA("q1?", "a", paraphrased_answer="ab", perturbed_answers=["b", "c"]),
        QA("q2?", "c", paraphrased_answer="c", perturbed_answers=["a"]),
        QA("q3?", "bba"),  # no paraphrase / perturbations: probability only
    ]
    r = evaluate_qa(unigram, tiny_tokenizer, exs, batch_size=2, generate=False, progress=False)
    p_a, p_b, p_c, p_ab = geo(.4, .1), geo(.2, .1), geo(.1, .1), geo(.4, .2, .1)
    p_bba = geo(.2, .2, .4, .1)
    assert r["probability_per_item"] == pytest.approx([p_a, p_c, p_bba], rel=1e-5)
    assert r["probability"] == pytest.approx((p_a + p_c + p_bba) / 3, rel=1e-5)
    tr1 = geo(p_b, p_c) / p_ab  # perturbed geometric mean over the paraphrased
    tr2 = p_a / p_c
    assert r["truth_ratio_per_item"][:2] == pytest.approx([tr1, tr2], rel=1e-5)
    assert r["truth_ratio_per_item"][2] is None
    assert r["truth_ratio_forget"] == pytest.approx((min(tr1, 1 / tr1) + min(tr2, 1 / tr2)) / 2, rel=1e-5)
    assert r["truth_ratio_retain"] == pytest.approx((max(0, 1 - tr1) + max(0, 1 - tr2)) / 2, rel=1e-5)
    # option-normalised probability uses the true answer, not the paraphrase
    assert r["probability_normalised_per_item"][0] == pytest.approx(p_a / (p_a + p_b + p_c), rel=1e-5)
    assert r["probability_normalised_per_item"][1] == pytest.approx(p_c / (p_c + p_a), rel=1e-5)
    # extraction strength without EOS: "bba" -> argmax "a" matches only the last token -> 1 - 2/3
    assert r["extraction_strength_per_item"] == pytest.approx([1.0, 0.0, 1 / 3])
    # min-k (k=0.4) without EOS: one lowest token of "bba" -> -log(0.2)
    assert r["min_k_scores_per_item"][2] == pytest.approx(-math.log(0.2), rel=1e-5)
    json.dumps(r, allow_nan=False)
    # any object or dict with the schema's field names works the same
    as_dicts = [{"question": e.question, "answer": e.answer, "paraphrased_answer": e.paraphrased_answer,
                 "perturbed_answers": e.perturbed_answers} for e in exs]
    r2 = evaluate_qa(unigram, tiny_tokenizer, as_dicts, batch_size=3, generate=False, progress=False)
    assert r2["truth_ratio_per_item"][:2] == pytest.approx(r["truth_ratio_per_item"][:2], rel=1e-6)


def test_batched_log_likelihoods_equal_unbatched(tiny_tokenizer, tiny_llama):
    prompts = ["Who?", "What did the author write in her first novel?", "x", "", "Where was she born?"]
    answers = ["Ann", "A long book about the sea and ships", "yes", "raw text, every token scored", "Oslo"]
    one = answer_log_likelihoods(tiny_llama, tiny_tokenizer, prompts, answers, batch_size=1, progress=False,
                                 return_tokens=True)
    many = answer_log_likelihoods(tiny_llama, tiny_tokenizer, prompts, answers, batch_size=4, progress=False,
                                  return_tokens=True)
    assert one["num_tokens"] == many["num_tokens"]
    assert many["num_tokens"][3] == len("raw text, every token scored") - 1  # first token has no prefix
    for a, b in zip(one["sum_nll"], many["sum_nll"]):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5)
    for a, b in zip(one["token_logprobs"], many["token_logprobs"]):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    # and equal to a direct, unpadded forward of the encoded sequence
    ids = prompt_ids(tiny_tokenizer, prompts[1]) + answer_ids(tiny_tokenizer, answers[1])
    n_prompt = len(prompt_ids(tiny_tokenizer, prompts[1]))
    with torch.no_grad():
        logits = tiny_llama(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits[:-1].float(), -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    assert many["sum_nll"][1] == pytest.approx(float(-lp[n_prompt - 1:].sum()), rel=1e-5)


def test_evaluators_restore_train_mode(tiny_tokenizer, tiny_llama):
    tiny_llama.train()
    answer_log_likelihoods(tiny_llama, tiny_tokenizer, ["q"], ["a"], progress=False)
    assert tiny_llama.training
    tiny_llama.eval()
    answer_log_likelihoods(tiny_llama, tiny_tokenizer, ["q"], ["a"], progress=False)
    assert not tiny_llama.training


def test_mc_letter_accuracy_on_toy_that_prefers_c(tiny_tokenizer):
    model = unigram_lm(tiny_tokenizer, {"C": 0.5, "A": 0.1, "B": 0.1, "D": 0.1})
    exs = [MC("q1", ["w", "x", "y", "z"], 2, "bio"), MC("q2", ["w", "x", "y", "z"], 0, "bio"),
           MC("q3", ["w", "x", "y", "z"], 2, "cyber"), MC("q4", ["w", "x", "y", "z"], 3, "cyber")]
    r = evaluate_mc(model, tiny_tokenizer, exs, batch_size=3, progress=False)
    assert r["predictions"] == [2, 2, 2, 2]
    assert r["accuracy"] == pytest.approx(0.5)
    assert r["random_baseline"] == pytest.approx(0.25)
    assert r["accuracy_by_subject"] == {"bio": 0.5, "cyber": 0.5}
    assert r["option_scores"][0] == pytest.approx([math.log(p) for p in (.1, .1, .5, .1)], rel=1e-5)
    json.dumps(r, allow_nan=False)


def test_mc_letter_fast_path_equals_scoring_each_option(tiny_tokenizer, tiny_llama):
    exs = [MC("Which organelle makes ATP?", ["nucleus", "ribosome", "mitochondrion", "vacuole"], 2),
           MC("Port of SSH?", ["21", "22", "80", "443"], 1)]
    fast = evaluate_mc(tiny_llama, tiny_tokenizer, exs, batch_size=2, progress=False)["option_scores"]
    prompts = [format_mc_prompt(e.question, e.choices) for e in exs for _ in range(4)]
    slow = answer_log_likelihoods(tiny_llama, tiny_tokenizer, prompts, list("ABCD") * 2, include_eos=False,
                                  batch_size=8, progress=False)
    assert [x for row in fast for x in row] == pytest.approx([-s for s in slow["sum_nll"]], rel=1e-5, abs=1e-5)
    direct = next_token_logprobs(tiny_llama, tiny_tokenizer, prompts[:1], [tid(tiny_tokenizer, "B")], progress=False)
    assert direct[0][0] == pytest.approx(fast[0][1], rel=1e-5)


def test_mc_text_mode_length_normalisation(tiny_tokenizer, unigram):
    exs = [MC("pick", ["aaaa", "b"], 0)]
    plain = evaluate_mc(unigram, tiny_tokenizer, exs, mode="text", progress=False)
    norm = evaluate_mc(unigram, tiny_tokenizer, exs, mode="text", length_normalize=True, progress=False)
    assert plain["option_scores"][0] == pytest.approx([4 * math.log(.4), math.log(.2)], rel=1e-5)
    assert plain["predictions"] == [1] and plain["accuracy"] == 0.0  # the sum prefers the short option
    assert norm["option_scores"][0] == pytest.approx([math.log(.4), math.log(.2)], rel=1e-5)
    assert norm["predictions"] == [0] and norm["accuracy"] == 1.0


@pytest.fixture()
def chatty_llama(tiny_llama):
    """The tiny Llama with larger random weights, so that greedy decoding produces varied text."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tiny_llama.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3, generator=g)
    return tiny_llama


def test_generate_answers_batched_matches_unbatched_and_strips_prompt(tiny_tokenizer, chatty_llama):
    qs = ["Hi?", "What is the capital of France?", "Who wrote it", "Name one famous novel of hers, please."]
    batched = generate_answers(chatty_llama, tiny_tokenizer, qs, max_new_tokens=12, batch_size=3, progress=False)
    single = generate_answers(chatty_llama, tiny_tokenizer, qs, max_new_tokens=12, batch_size=1, progress=False)
    assert batched == single
    assert any(len(s) >= 4 for s in batched)
    for q, s in zip(qs, batched):
        ids = torch.tensor([prompt_ids(tiny_tokenizer, q)])
        out = chatty_llama.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                    do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        if tiny_tokenizer.eos_token_id in new:
            new = new[:new.index(tiny_tokenizer.eos_token_id)]
        assert s == tiny_tokenizer.decode(new, skip_special_tokens=True).strip()
        assert q not in s and "assistant" not in s


def test_generate_answers_stops_at_eos(tiny_tokenizer):
    # greedy: "\n" (end of the prompt) -> "h" -> "i" -> EOS -> "z" ...; the answer is "hi"
    model = bigram_lm(tiny_tokenizer, {"\n": "h", "h": "i", "i": tiny_tokenizer.eos_token_id,
                                       tiny_tokenizer.eos_token_id: "z"})
    out = generate_answers(model, tiny_tokenizer, ["q?", "longer question?"], max_new_tokens=6, progress=False)
    assert out == ["hi", "hi"]
    assert generate_answers(model, tiny_tokenizer, ["q?"], max_new_tokens=6, stop_strings=["i"],
                            progress=False) == ["h"]


def test_continuation_of_memorised_text(tiny_tokenizer):
    cycle = "ab cd.ef,gh;"
    model = bigram_lm(tiny_tokenizer, {c: cycle[(i + 1) % len(cycle)] for i, c in enumerate(cycle)})
    texts = [cycle * 6, (cycle * 6)[3:], "too short"]
    r = evaluate_continuation(model, tiny_tokenizer, texts, prefix_tokens=20, max_new_tokens=24, batch_size=2,
                              retain_scores={"bleu": 0.0, "rougeL_f1": 0.0}, progress=False)
    assert r["n"] == 2 and r["n_skipped"] == 1 and r["indices"] == [0, 1]
    assert r["references"][0] == (cycle * 6)[20:44].strip()
    assert r["generations"] == r["references"]
    assert r["bleu"] == pytest.approx(100.0)
    assert r["rougeL_f1"] == pytest.approx(1.0)
    assert r["asg"] == pytest.approx(100.0)
    # MUSE layout: explicit prefixes and reference continuations
    r2 = evaluate_continuation(model, tiny_tokenizer, ["ab cd"], continuations=[".ef,gh;ab"], max_new_tokens=8,
                               progress=False)
    assert r2["generations"] == [".ef,gh;a"]
    json.dumps(r, allow_nan=False)


def test_fluency_proxy_ranks_repetitive_answer_lower(tiny_tokenizer):
    base = unigram_lm(tiny_tokenizer, {c: 0.03 for c in "abcdefghijklmnopqrstuvwxyz "})
    qs = ["q?", "q?", "q?"]
    gens = ["quiet rivers bend south", "bend bend bend bend bend bend", ""]
    r = evaluate_fluency(base, tiny_tokenizer, qs, gens, progress=False)
    s = r["score_per_item"]
    assert s[1] < s[0]
    assert s[2] == 1.0 and r["perplexity_per_item"][2] is None
    assert r["repetition_per_item"][0] == 0.0 and r["repetition_per_item"][1] > 0.5
    # every character has p = 0.03: perplexity 1/0.03 for the non-empty answers
    assert r["perplexity_per_item"][0] == pytest.approx(1 / 0.03, rel=1e-4)
    assert r["mean"] == pytest.approx(sum(s) / 3)
    assert "proxy" in r["metric"].lower()
    json.dumps(r, allow_nan=False)


def test_evaluate_tofu_end_to_end(tiny_tokenizer):
    # greedy generation from the prompt's final "\n": "a b a b ..." (so ROUGE is non-trivial)
    model = bigram_lm(tiny_tokenizer, {"\n": "a", "a": " ", " ": "b", "b": tiny_tokenizer.eos_token_id})
    forget = [QA(f"forget {i}?", ans, "forget", para, pert) for i, (ans, para, pert) in
              enumerate([("a b", "b a", ["c d", "d c"]), ("a c", "c a", ["b b", "d d"]),
                         ("d a", "a d", ["c c", "b c"])])]
    retain = [QA(f"retain {i}?", ans, "retain", para, pert) for i, (ans, para, pert) in
              enumerate([("a b", "a  b", ["c", "d"]), ("b", "b b", ["a a", "c"])])]
    ra = [QA("ra?", "a b", "real_authors", None, ["c d", "b"])]
    wf = [QA("wf?", "a", "world_facts", None, ["b", "c", "d"])]
    holdout = [QA(f"held {i}?", ans, "holdout") for i, ans in enumerate(["dd cc", "c b", "bb"])]
    kw = dict(batch_size=2, max_new_tokens=6, progress=False)
    r = evaluate_tofu(model, tiny_tokenizer, forget, retain, ra, wf, holdout=holdout, **kw)
    assert r["model_utility_complete"]
    assert r["model_utility"] == pytest.approx(harmonic_mean([r[k] for k in r["model_utility_used"]]))
    assert r["retain_probability"] == pytest.approx(r["sets"]["retain"]["probability"])
    assert r["real_authors_probability"] == pytest.approx(r["sets"]["real_authors"]["probability_normalised"])
    assert r["world_facts_truth_ratio"] == pytest.approx(r["sets"]["world_facts"]["truth_ratio_retain"])
    assert r["sets"]["forget"]["generations"][0] == "a b"
    assert r["forget_rougeL_recall"] == pytest.approx(
        sum(rouge_l_recall("a b", e.answer) for e in forget) / 3)
    assert r["forget_quality"] is None  # no retain model given
    assert 0.0 <= r["mia_min_k_auc"] <= 1.0 and r["privleak_reference_auc"] == 0.5
    # the model as its own reference: identical distributions
    again = evaluate_tofu(model, tiny_tokenizer, forget, retain, holdout=holdout, retain_model_stats=r,
                          generate=False, include_sets=False, **kw)
    assert again["forget_quality"] == pytest.approx(1.0)
    assert again["privleak"] == pytest.approx(0.0, abs=1e-6)
    assert again["model_utility_used"] == ["retain_probability", "retain_truth_ratio"]
    assert not again["model_utility_complete"] and "sets" not in again
    json.dumps(r, allow_nan=False)
