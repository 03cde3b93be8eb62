"""Small built-in vocabularies for needle keys and values and the synthetic haystack.

They live in code rather than in data files so that every prompt is reproducible from a seed alone,
with no download and nothing to keep in sync. The lists are plain, common English words so that any
byte-level or word-piece tokenizer handles them without unknown tokens.
"""

from __future__ import annotations

ADJECTIVES = (
    "amber ancient brave bright calm clever cold crimson curious dark distant eager early empty faint fancy "
    "fierce gentle golden grand green hidden hollow honest humble icy jolly kind large lazy little lively "
    "loud lucky modern narrow noble odd orange pale patient plain polite proud quick quiet rapid rare rough "
    "round royal rusty sandy scarlet sharp shiny silent silver simple sleepy slow small smooth soft solid "
    "sour spare steady steep stormy strange sunny sweet swift tall tender thick tidy tiny vast violet warm "
    "wild windy wise wooden young"
).split()

NOUNS = (
    "anchor apple arrow badge basket beacon bell bridge brook bucket cabin candle canyon castle cedar "
    "chair circle cliff cloud coin comet compass cottage crystal desert diamond dragon drum eagle engine "
    "feather fern field flame forest fountain garden gate glacier harbor hammer helmet island jacket "
    "kettle ladder lantern lemon library lighthouse marble meadow mirror monkey mountain needle ocean "
    "orchard otter paddle palace parrot pencil pepper pillow planet pocket puzzle rabbit river rocket "
    "saddle sailor scarf shadow shell shovel signal spoon statue stone summit table teapot thunder "
    "tiger tower tractor trumpet tunnel umbrella valley violin wagon walnut window wizard"
).split()

VERBS = (
    "admired borrowed carried cleaned collected counted crossed described found followed gathered guarded "
    "handled noticed opened painted passed polished praised repaired returned visited watched weighed"
).split()

PLACES = (
    "near the old mill|beside the river|under the morning sky|in the quiet town|along the northern road|"
    "behind the market|at the edge of the forest|on the hill|inside the workshop|across the bay"
).split("|")

CONNECTIVES = ("Later", "Meanwhile", "After that", "Before noon", "In the evening", "That year", "Once again")
