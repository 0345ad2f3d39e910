"""Phase II's answer-overlap stop (alter/train/stopping/answer_overlap.py, early_stop.py): what generation answers decides."""

import json

import pytest
import torch

import alter
from alter.data.schema import QAExample
from alter.train import AlterTrainer
from alter.train.stopping import answer_overlap as answer_stop
from alter.train.stopping.answer_overlap import AnswerOverlapStop
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Where does zorblat {i} live?", f"zorblat {i} lives in the city of Qwex.", domain="forget")
          for i in range(4)]
RETAIN = [QAExample(f"What colour is the sky on day {i}?", "The sky is blue.") for i in range(4)]


def _trainer(tok, tmp_path=None, **kw):
    torch.manual_seed(0)
    # the other rules off, so that only the answer check can stop phase II
    cfg = dict(batch_size=2, phase1_epochs=0, phase2_epochs=3, lr_phase2=1e-2, phase2_min_steps=0,
               stop_when_forgotten=-1.0, stop_forget_probability=-1.0, stop_level_scale=-1.0)
    cfg.update(kw)
    return AlterTrainer(make_tiny_llama(len(tok)), tok, alter.AlterConfig(**cfg), FORGET, RETAIN,
                        output_dir=tmp_path, progress=False)


def test_overlap_is_the_mean_rouge_l_recall_of_the_greedy_answers(tiny_tokenizer, monkeypatch):
    stop = AnswerOverlapStop(tiny_tokenizer, FORGET, n=3, threshold=0.3, every=2, min_step=4, seed=0,
                             system_prompt=None)
    assert len(stop.questions) == 3 and set(stop.questions) <= {e.question for e in FORGET}
    seen = {}

    def fake_generate(model, tok, questions, **kw):
        seen.update(kw)
        answers = {e.question: e.answer for e in FORGET}
        return [answers[questions[0]], "", "zorblat lives"] if len(questions) == 3 else []

    monkeypatch.setattr(answer_stop, "generate_answers", fake_generate)
    # the first answer is the true one (recall 1), the second empty (0), the third 2 of 8 words
    # ("zorblat", "lives"; the reference's tokens: zorblat, N, lives, in, the, city, of, qwex)
    assert stop.overlap(None) == pytest.approx((1 + 0 + 2 / 8) / 3)
    assert not stop.forgotten(None)
    assert seen["batch_size"] == 3 and seen["progress"] is False and 1 <= seen["max_new_tokens"] <= 64
    assert [s for s in range(1, 10) if stop.due(s)] == [4, 6, 8]


def test_phase2_stops_at_the_first_check_whose_answers_overlap_little(tiny_tokenizer, tmp_path, monkeypatch):
    # 4 forget examples, 2 per step, 3 epochs: 6 steps; checks after steps 2 and 4 and 6 (min 2, every 2)
    scripted = iter([0.9, 0.2, 0.1])
    monkeypatch.setattr(AnswerOverlapStop, "overlap", lambda self, model: setattr(self, "last", next(scripted))
                        or self.last)
    tr = _trainer(tiny_tokenizer, tmp_path, stop_answer_overlap=0.3, stop_check_every=2, phase2_min_steps=2)
    tr.train()
    assert tr.report.phases["phase2"]["stopped_early_at"] == 4 and tr.report.phases["phase2"]["steps"] == 4
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["stopped_early"] is True and log[-1]["answer_overlap"] == 0.2


def test_answer_check_runs_real_generation_mid_training_and_off_means_full_length(tiny_tokenizer):
    # a random tiny model answers nothing like the forget answers: the first check (step 2) stops it,
    # and training up to there went through generation and back to train mode without error
    tr = _trainer(tiny_tokenizer, stop_answer_overlap=0.9, stop_check_every=1, phase2_min_steps=2,
                  stop_check_questions=2)
    tr.train()
    assert tr.report.phases["phase2"]["stopped_early_at"] == 2
    full = _trainer(tiny_tokenizer, stop_answer_overlap=-1.0)
    full.train()
    assert full.report.phases["phase2"]["steps"] == 6 and "stopped_early_at" not in full.report.phases["phase2"]
