"""A fuzzing suite of modscope's own: hostile and broken checkpoints of every format, built with the real
writers and seeded mutations, run through every reading command (see docs/security.md).

``cases`` builds the files, ``commands`` says which commands run on them and what each may answer,
``worker`` runs many cases in one long-lived process, ``harness`` drives the workers and the true
one-process-per-run cases; ``tests/test_fuzz.py`` asserts the results.
"""
