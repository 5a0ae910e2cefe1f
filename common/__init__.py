"""The ground floor: helpers every other package may import, and which import none of them.

``files`` (atomic writes), ``schema`` (typed configs from YAML data with errors that name the fix),
``exits`` (one exit-code convention for every command line), ``logs`` (console logging set-up).
"""
