"""VQA accuracy (TextVQA, VizWiz): the EvalAI/MMF answer normaliser and the 10-annotator soft score.

The normaliser (docs/eval-protocols.md s.4.2) is applied to the prediction and to each GT answer:

1. lower-case; delete every ``,`` and ``?``; ``'s`` -> `` 's``; strip;
2. newline and tab -> space; strip;
3. for each character of ``PUNCTUATION``: delete it if the text from step 2 has it next to a space
   (``"p "`` or ``" p"``), else replace it by a space (the original's digit-comma-digit escape never
   fires: commas are gone after step 1); then delete every ``.`` not followed by a digit (the original
   regex's look-behind is malformed, so ``5.`` -> ``5`` while ``3.5`` is kept);
4. split on whitespace; number words ``none``/``zero``..``ten`` -> digits; drop ``a``/``an``/``the``;
   apostrophe-less contractions get their apostrophe (``dont`` -> ``don't``); join with single spaces.

Legacy quirk kept under ``rules="legacy"``: the original passes ``re.UNICODE`` (= 32) as the *count*
argument of the period substitution, so only the first 32 periods of step 3 are deleted. Under
``rules="recommended"`` all of them are. Everything else is the standard EvalAI behaviour, kept in both.

The score of a prediction p against exactly 10 normalised GT answers is the mean over the 10
leave-one-annotator-out subsets of ``min(1, matches among the other 9 / 3)`` (s.4.3): with m GT answers
equal to p, m = 0, 1, 2, 3, >=4 give 0, 0.3, 0.6, 0.9, 1.0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

N_ANNOTATORS = 10

# Step 3: each is deleted when it touches a space in the text, else replaced by a space. "," and "?"
# are in the original's list but can no longer occur (step 1 removed them).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")  # fmt: skip
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
_PERIOD = re.compile(r"\.(?!\d)")
LEGACY_PERIOD_CAP = int(re.UNICODE)  # 32: the count the original passes to re.sub by mistake

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})

# The standard VQA contraction table. Its four capitalised keys ("Id've", "I'dve", "Im", "Ive") are left
# out: words are lower-cased before the lookup, so they never matched. "somebody'd" -> "somebodyd" is
# the table's own typo, kept.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip


def _punctuation(text: str, period_cap: int) -> str:
    # The delete-or-space decision looks at the input of this step, not at the text being rewritten.
    escape = "," in text and _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if p not in text:  # nothing to rewrite (replacing others never creates p)
            continue
        touches_space = (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if touches_space or escape else " ")
    return _PERIOD.sub("", out, count=period_cap)


def _words(text: str) -> str:
    out = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)  # before the article test: "none" -> "0"
        if word not in ARTICLES:
            out.append(CONTRACTIONS.get(word, word))
    return " ".join(out)


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str, rules: str = "legacy") -> str:
    """The EvalAI/MMF normal form of one answer (module docstring); ``rules`` only sets the period cap.

    >>> normalize_answer("The Cat.")
    'cat'
    >>> normalize_answer("Two dogs!")
    '2 dogs'
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _punctuation(text, LEGACY_PERIOD_CAP if rules == "legacy" else 0)
    return _words(text)


def vqa_accuracy(prediction: str, gt_answers: Sequence[str], rules: str = "legacy") -> float:
    """Soft VQA accuracy in [0, 1] of one prediction against exactly 10 GT answers (both raw).

    Raises ``ValueError`` unless there are exactly 10 GT answers (the original asserts it). The sum
    runs over the 10 annotators in order, as the original's, so results are bit-identical.
    """
    if len(gt_answers) != N_ANNOTATORS:
        raise ValueError(f"VQA accuracy needs exactly {N_ANNOTATORS} GT answers, got {len(gt_answers)}")
    gts = [normalize_answer(a, rules) for a in gt_answers]
    pred = normalize_answer(prediction, rules)
    matches = gts.count(pred)
    if matches == 0:
        return 0.0
    total = 0.0
    for g in gts:  # leave annotator g out: the other 9 hold matches (- 1 if g itself matched)
        total += min(1.0, (matches - (g == pred)) / 3)
    return total / N_ANNOTATORS
