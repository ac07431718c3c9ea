"""The cost budget's numbers: what a condition may cost when it is saved, what one
evaluation may spend, and what each kind of step is reckoned at (see the package doc).

Apart so that the estimate (`cost`, `parser`), the check when saved (`compile`) and
the meter when run (`metering`) all read the same limits.
"""

MAX_DEPTH = 3  # comprehensions nested in one another
MAX_RANGE = 1_000  # elements a comprehension iterates over, as estimated
MAX_COST = 20_000  # estimated steps of one evaluation, refused when saved above it
MAX_STEPS = 20_000  # steps one evaluation may spend when it runs
ASSUMED_LENGTH = 32  # elements of a list or map read from the context, when saved
CALL_STEPS = 10  # a metered iteration's call out to Python, in steps
# `map` and `filter` copy what they have built at every element: element i costs i
# copies of an element (measured: about 0.5 us per element copied).
COPY_STEPS = 6
# A regular expression is compiled wherever it is matched: 50-150 us for a plain one,
# 0.3 ms for each Unicode class (\w, \d, \s, \p); a counted repetition of a Unicode
# class compiles in seconds (\w{100}: 0.44 s), so it is refused, as is a pattern that
# is not a literal (a document's metadata would choose what is compiled).
MATCH_STEPS = 1_500
UNICODE_CLASS_STEPS = 3_000
MAX_REPEAT = 1_000  # the product of a pattern's counted repetitions
METER = "bastion_budget"  # the functions the rewritten condition calls
RESET = "bastion_budget_reset"
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
