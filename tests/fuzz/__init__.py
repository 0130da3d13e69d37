"""Coverage-guided fuzzing (atheris): targets, seed corpora and the smoke test; bench/fuzz.py runs it long."""
