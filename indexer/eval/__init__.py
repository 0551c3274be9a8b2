"""Measuring retrieval: BEIR datasets (beir.py, evaluation.py: `semsearch eval DATASET`) and the
project's own question files (questions.py: `semsearch eval QUESTIONS.jsonl`, `semsearch calibrate`)."""
