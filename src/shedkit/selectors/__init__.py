"""Selection rules on scores and clusters (random, top-k, QOCS, QWCS, DSIR, DQ). Never imports torch.

Named ``selectors`` rather than ``select`` so that ``shedkit.select(...)``, the API call,
is never shadowed by a subpackage of the same name.
"""
