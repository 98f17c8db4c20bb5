"""The Arduino template's helpers: the sketch's layout, the memory it needs, its build, its upload,
and simavr. Every generated project carries a copy beside its server; standard library only."""
