"""The `utvm` command line: the only package that imports all the others.

``main.py`` builds the parser and turns errors into one line and an exit code; each command lives
in a module of its own. Commands import nothing heavy (TVM, numpy) until they run, so
`utvm --help` stays fast.
"""
