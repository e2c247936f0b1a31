"""Text conventions in one place: the question-answering prompt and answer normalisation.

Ground floor (imports nothing of videococa): the model's `answer()`, finetuning on QA pairs, the QA
evaluation and the synthetic world all write and read question prompts the same way through here.
"""

from __future__ import annotations

import re

QA_TEMPLATE = "question: {} answer:"
"""How a question is put to the text decoder; the answer is the continuation (CoCa's captioning format)."""


def qa_prompt(question: str, template: str = QA_TEMPLATE) -> str:
    """The decoder prompt for `question` ("question: what colour is it? answer:")."""
    return template.format(question.strip())


def qa_text(question: str, answer: str, template: str = QA_TEMPLATE) -> str:
    """A question with its answer, as one training text ("question: ... answer: red")."""
    return f"{qa_prompt(question, template)} {answer}"


_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_VQA_COMMA_DIGITS = re.compile(r"(\d)(,)(\d)")
_VQA_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as written there: a period not followed by a digit
_VQA_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_ARTICLES = frozenset({"a", "an", "the"})
# Contractions written without an apostrophe -> with it. vqaEval.py's list also has "Im", "Ive", "Id've", "I'dve";
# they are left out because its words are lowercased before the lookup, so they never match there either.
_VQA_CONTRACTIONS = dict(pair.split(":") for pair in """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've
didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't
havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's isnt:isn't
itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't mightnt've:mightn't've
mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've neednt:needn't notve:not've oclock:o'clock
oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't shed've:she'd've
she'dve:she'd've she's:she's shouldve:should've shouldnt:shouldn't shouldnt've:shouldn't've
shouldn'tve:shouldn't've somebody'd:somebodyd somebodyd've:somebody'd've somebody'dve:somebody'd've
somebodyll:somebody'll somebodys:somebody's someoned:someone'd someoned've:someone'd've someone'dve:someone'd've
someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd thered've:there'd've
there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've
theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've
werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd
wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's
whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't
wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've
y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've you'dve:you'd've youll:you'll
youre:you're youve:you've""".split())


def vqa_normalize(answer: str) -> str:
    """An answer normalised as the official VQA evaluation does (vqaEval.py of GT-Vision-Lab/VQA).

    processPunctuation: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted where it touches a space
    (or anywhere when the text has a comma between digits, "1,000"), else replaced by a space; periods not
    followed by a digit are deleted ("3.5" keeps its point). processDigitArticle: lowercase, number words zero
    to ten (and "none") become digits, the articles a / an / the are dropped, and contractions written without
    an apostrophe get one ("dont" -> "don't"). Newlines and tabs become spaces first, as there.
    vqaEval.py applies these steps only when VQA's ten annotators disagree (its references are already
    normalised); video-QA references are raw text, so here every prediction and reference goes through them.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    out = text
    strip_all = _VQA_COMMA_DIGITS.search(text) is not None
    for p in _VQA_PUNCT:
        out = out.replace(p, "" if strip_all or p + " " in text or " " + p in text else " ")
    out = _VQA_PERIOD.sub("", out)
    words = [_VQA_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words if w not in _VQA_ARTICLES)


