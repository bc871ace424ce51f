"""The stages of one DNO iteration, each a function from files (and a model) to files:
sample -> judge -> pairs -> reference -> train -> evaluate. `dno.loop` calls them in order."""
