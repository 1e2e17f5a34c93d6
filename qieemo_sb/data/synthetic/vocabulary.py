"""What the synthetic corpora say: emotion labels and their prosody, word lists, sentence templates."""

import re
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np


#: Labels of the IEMOCAP release; the 4-class task keeps the first five
#: (exc merged into hap).
LABELS = ("neu", "hap", "exc", "sad", "ang", "xxx", "fru", "sur", "fea", "oth", "dis")
KEPT_EMOTIONAL = ("hap", "exc", "sad", "ang")
RARE_LABELS = ("sur", "fea", "dis", "oth")
COMMON_WEIGHTS = {
    "neu": 0.24, "hap": 0.11, "exc": 0.11, "sad": 0.18, "ang": 0.18,
    "xxx": 0.10, "fru": 0.08,
}  # fmt: skip
MODE_CYCLE = ("both", "prosody", "wording", "both")
CATEGORY_NAMES = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
    "ang": "Anger", "fru": "Frustration", "sur": "Surprise", "fea": "Fear",
    "dis": "Disgust", "oth": "Other",
}  # fmt: skip
#: Mean (valence, activation, dominance) ratings per class (1..5 scale).
VAD_MEANS = {
    "neu": (3.0, 2.3, 2.6), "hap": (4.0, 3.0, 3.0), "exc": (4.0, 3.8, 3.4),
    "sad": (1.8, 2.0, 2.1), "ang": (1.6, 3.9, 4.0), "fru": (2.0, 3.3, 3.3),
    "sur": (3.4, 3.8, 2.6), "fea": (1.8, 3.4, 1.7), "dis": (1.7, 3.0, 3.5),
    "oth": (3.0, 3.0, 3.0),
}  # fmt: skip


@dataclass(frozen=True)
class ProsodyProfile:
    """How a class changes the speaker's neutral prosody.

    Arguments
    ---------
    rate : float
        Factor on the words-per-minute rate.
    pitch : float
        Shift of the base pitch (eSpeak 0..100 units).
    pitch_range : float
        Shift of the pitch range (eSpeak 0..100 units).
    volume : float
        Factor on the amplitude.
    word_gap : int
        Pause added between words, in 10 ms units.
    """

    rate: float = 1.0
    pitch: float = 0.0
    pitch_range: float = 0.0
    volume: float = 1.0
    word_gap: int = 0


#: Prosody of each class relative to the speaker's neutral voice.
PROSODY_PROFILES = {
    "neu": ProsodyProfile(),
    "hap": ProsodyProfile(rate=1.10, pitch=12, pitch_range=25, volume=1.25),
    "exc": ProsodyProfile(rate=1.22, pitch=18, pitch_range=35, volume=1.45),
    "sad": ProsodyProfile(rate=0.72, pitch=-12, pitch_range=-30, volume=0.60, word_gap=2),
    "ang": ProsodyProfile(rate=1.18, pitch=6, pitch_range=15, volume=1.75),
    "fru": ProsodyProfile(rate=1.05, pitch=3, pitch_range=-5, volume=1.30),
    "sur": ProsodyProfile(rate=1.00, pitch=20, pitch_range=40, volume=1.20),
    "fea": ProsodyProfile(rate=1.30, pitch=15, pitch_range=-15, volume=0.80),
    "dis": ProsodyProfile(rate=0.85, pitch=-6, pitch_range=10, volume=1.10),
    "oth": ProsodyProfile(),
}

# --------------------------------------------------------------------------
# Vocabulary. Neutral words must stay free of emotion words (tests check it).
# --------------------------------------------------------------------------
NAMES = (
    "Anna Peter Mary John Thomas Alice Henry Margaret George Helen Robert Clara "
    "Edward Laura Walter Susan Daniel Emily Frank Grace Arthur Lucy Charles "
    "Martha Philip Rose Samuel Julia Oliver Sarah Victor Diana Hugh Ellen Simon "
    "Nora Albert Esther Ralph Agnes Stephen Irene Felix Harriet Leonard Mabel "
    "Oscar Paula Raymond Sylvia"
).split()
NOUNS = (
    "apple book bottle bridge candle captain car castle chair child clock coat "
    "country cup desk doctor dog door engine farmer field fire flower forest "
    "gate glass hammer harbor hat hill horse house island jacket journey key "
    "king kitchen ladder lake lamp letter lion machine map message mirror "
    "moon mountain needle newspaper ocean orange painter paper parcel pencil "
    "picture pillow pocket poem potato queen question rabbit radio river road "
    "rock roof room sailor season servant ship shoe silver singer soldier song "
    "stone story street student sun table teacher telephone ticket tower train "
    "tree violin wagon wall watch window word basket blanket bread butter cabin "
    "camera carpet cloud corner diamond drawer feather fountain guitar helmet "
    "jewel kettle lantern lemon medal ribbon saddle sandwich shadow shelf spoon "
    "sugar thread tunnel umbrella vase wheel whistle wire bicycle compass "
    "envelope hammock notebook orchard pebble puzzle rocket statue trumpet"
).split()
PLACES = (
    "library kitchen garden harbor station market office school church village "
    "forest valley cottage cabin castle tower meadow bridge island field shop "
    "yard hotel museum hospital bakery theater factory farm beach"
).split()
ADJECTIVES = (
    "old new small large quiet narrow wide heavy light dark bright warm cold "
    "long short round square wooden golden silver green blue red yellow brown "
    "white black gray simple strange ordinary ancient modern empty full clean "
    "dusty tall low deep shallow distant early late soft hard smooth rough thin "
    "thick plain busy famous hidden open closed rusty shiny tiny enormous "
    "northern southern eastern western polished painted striped curved hollow"
).split()
VERBS = tuple(
    tuple(pair.split("/"))
    for pair in (
        "carry/carried open/opened close/closed paint/painted find/found "
        "bring/brought take/took build/built clean/cleaned count/counted "
        "cover/covered deliver/delivered describe/described draw/drew "
        "drop/dropped fix/fixed follow/followed gather/gathered hold/held "
        "keep/kept leave/left lift/lifted measure/measured move/moved "
        "notice/noticed pack/packed pass/passed pull/pulled push/pushed "
        "repair/repaired return/returned sell/sold send/sent show/showed "
        "sign/signed study/studied throw/threw touch/touched turn/turned "
        "wash/washed watch/watched wrap/wrapped write/wrote borrow/borrowed "
        "buy/bought check/checked choose/chose collect/collected "
        "examine/examined hide/hid load/loaded mark/marked order/ordered "
        "place/placed prepare/prepared polish/polished visit/visited "
        "carve/carved fold/folded hang/hung fetch/fetched"
    ).split()
)
INTRANSITIVE_PAST = (
    "arrived stopped fell disappeared moved returned began ended shook cracked "
    "vanished appeared rang burned melted froze waited rested turned swayed"
).split()
ADVERBS = (
    "slowly quickly carefully quietly suddenly finally gently always often "
    "rarely soon later together again almost already still perhaps certainly "
    "simply easily clearly politely patiently briefly softly"
).split()
PREPOSITIONS = (
    "near behind under beside inside above below across beyond around along " "past toward against"
).split()
TIMES = (
    "in the morning|at noon|in the evening|at midnight|on Monday|on Tuesday|"
    "on Friday|on Sunday|last week|next year|before dinner|after lunch|"
    "during the winter|at dawn|at sunset|in the spring|every day|that autumn"
).split("|")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
NUMBERS = (
    "two three four five six seven eight nine ten eleven twelve fifteen twenty "
    "thirty forty fifty"
).split()
FAMILY = (
    "father mother brother sister uncle aunt cousin grandfather grandmother "
    "neighbor husband wife son daughter"
).split()
PRONOUNS = "he she they we I".split()
IRREGULAR_PLURALS = {"child": "children", "shelf": "shelves", "potato": "potatoes"}

#: Narrative templates of the LibriSpeech-like corpus.
LIBRI_TEMPLATES = (
    "{Name} {past} the {adj} {noun} {prep} the {noun2}.",
    "The {adj} {noun} was {prep} the {noun2} {time}.",
    "{Pron} {adverb} {past} {a_adj} {noun} and {past2} it to the {place}.",
    "When the {noun} {intrans}, {name} {past} the {adj} {noun2}.",
    "{Name} said that the {noun} in the {place} was {adj}.",
    "In the {adj} {place}, {pron} found {a_adj2} {noun} beside the {noun2}.",
    "{Name} and {name2} {past} the {noun} {time}.",
    "It was {adj} in the {place}, and the {noun} {intrans} {adverb}.",
    "{Pron} could not {base} the {noun} because the {noun2} was {adj}.",
    "The {family} of {name} {past} {a_adj} {noun} {time}.",
    "{Number} {adj} {nouns} stood {prep} the {place}.",
    "Nobody {past} the {noun} until the {noun2} {intrans}.",
    "The {noun} {intrans} {prep} the {adj} {noun2}, and {name} {past} the {noun3}.",
)
#: Narrative templates that carry the emotion vocabulary into the ASR data.
LIBRI_FEELING_TEMPLATES = (
    "{Name} felt {feeling} when the {noun} {intrans}.",
    "The {family} was {feeling} about the {adj} {noun}.",
    "{Pron} looked {feeling}, and {name} {past} the {noun}.",
    "{Name} said, {quote}",
    "Then {name} cried out, {quote}",
)
#: Conversational neutral templates of the IEMOCAP-like corpus.
NEUTRAL_TEMPLATES = (
    "I will meet {name} at the {place} {time}.",
    "Could you pass me the {noun}?",
    "The {noun} is {prep} the {noun2}.",
    "We need to {base} the {noun} before {day}.",
    "My {family} works at the {place}.",
    "Did you {base} the {noun} yesterday?",
    "The {place} opens at {number} o'clock.",
    "{Name} bought {a_adj} {noun} {time}.",
    "I think the {noun} is in the {place}.",
    "Okay, let me check the {noun} first.",
    "It takes about {number} minutes to get to the {place}.",
    "So, where did you put the {noun}?",
    "I'm going to the {place} {time}.",
    "Yes, I talked to {name} about the {noun}.",
    "The {adj} {noun} is still in the {place}.",
    "Maybe we can {base} the {noun} on {day}.",
    "What time does the {place} open?",
    "How far is the {place} from here?",
    "This {noun} is for {name}.",
    "I am going out with {name} {time}.",
    "Oh, the {noun} is right there, next to the {noun2}.",
    "Now we just have to {base} the {noun} and the {noun2}.",
    "Is this the {noun} you were looking for?",
    "I never really used the {noun} that much.",
    "Let me know when you are back from the {place}.",
    "Do you have the {noun} with you, or is it still at the {place}?",
    "There's one more {noun} in the {place}, I think.",
    "Everyone said the {place} was closed on {day}.",
    "So what did {name} say about the {noun}?",
    "Okay, I will look for the {noun} tonight.",
    "Please put the {noun} on the {noun2}, it's not mine.",
    "I can't find the {noun}, it was in the {place} last time.",
    "Well, I saw {name} at the {place}, and we talked for an hour.",
    "Does anyone know how the {noun} got up there?",
    "We were told to wait here until {number} o'clock.",
    "He said there are only {number} left, so get one now.",
)

#: Per-class slot words (each is in the class lexicon).
EMOTION_SLOTS = {
    "ang_adj": "ridiculous unacceptable outrageous stupid insulting pathetic disgraceful absurd".split(),
    "ang_insult": "idiot liar coward fool jerk".split(),
    "ang_intj": ["Enough!", "Shut up!", "Listen to me!", "Damn it!", "Unbelievable!"],
    "ang_state": ["furious", "fed up", "sick of this", "livid"],
    "hap_adj": "happy glad pleased delighted grateful cheerful proud".split(),
    "hap_adj2": "lovely wonderful beautiful charming sweet pleasant".split(),
    "hap_intj": ["Oh, how nice,", "Aw, that's sweet,", "Oh good,", "Oh, lovely,"],
    "exc_adj": "amazing fantastic incredible awesome brilliant spectacular".split(),
    "exc_intj": ["Oh wow,", "Yay!", "Hooray,", "Oh my gosh,", "Whoa,"],
    "exc_verb": "won nailed aced conquered".split(),
    "sad_adj": "lonely devastated hopeless miserable heartbroken lost helpless".split(),
    "sad_noun": ["tears", "grief", "funeral", "goodbye"],
    "fru_adj": "annoying pointless exhausting useless".split(),
    "fea_adj": "scared afraid terrified frightened".split(),
    "dis_adj": "disgusting filthy gross revolting".split(),
}

#: Emotional wording templates per class; each has a class-specific word.
EMOTION_TEMPLATES = {
    "ang": (
        "{ang_intj} I am {ang_state} with you!",
        "How dare you {base} my {noun}!",
        "This is {ang_adj}, completely {ang_adj}!",
        "Get out of my {place} right now!",
        "I hate the way you {base} the {noun}!",
        "Stop lying to me about the {noun}!",
        "You never listen, you {ang_insult}!",
        "Don't you dare touch my {noun} again!",
        "I told you a hundred times, {ang_intj}",
        "What a {ang_adj} thing to say, {name}!",
    ),
    "hap": (
        "I am so {hap_adj} about the {noun}!",
        "What a {hap_adj2} {noun}, I love it!",
        "Thank you so much for the {noun}, {name}.",
        "{hap_intj} this makes me smile.",
        "We had such a {hap_adj2} time at the {place}.",
        "I really love you, {name}.",
        "Everything is fine now, I'm so {hap_adj}.",
        "You always make me laugh, {name}.",
    ),
    "exc": (
        "{exc_intj} we {exc_verb} the {noun}!",
        "This is {exc_adj}, {name}, absolutely {exc_adj}!",
        "I can't believe we are going to the {place}!",
        "Let's celebrate tonight, we did it!",
        "Guess what, I got the {noun}! It's {exc_adj}!",
        "{exc_intj} look at this {exc_adj} {noun}!",
    ),
    "sad": (
        "I miss {name} so much.",
        "I feel so {sad_adj} since the {noun} is gone.",
        "Nothing matters anymore without {name}.",
        "I'm sorry, I just can't stop crying.",
        "Everyone left the {place}, and I am {sad_adj}.",
        "It was the last time I saw my {family}, and now there's only {sad_noun}.",
        "I wish things could go back to how they were.",
        "My {family} died, and I never said goodbye.",
    ),
    "fru": (
        "Why does the {noun} keep breaking, again and again?",
        "I have asked you three times already.",
        "Whatever, it never works anyway.",
        "I've been waiting here for hours, this is so {fru_adj}.",
        "Can't you just do one simple thing?",
    ),
    "sur": (
        "Really? You {past} the {noun}?",
        "What? Since when?",
        "No way, are you serious?",
        "Oh! I did not expect that at all.",
    ),
    "fea": (
        "Please don't hurt me.",
        "I'm {fea_adj}, something is outside the {place}.",
        "What was that noise? I'm {fea_adj}.",
        "Help! Somebody help me!",
    ),
    "dis": (
        "Ugh, that's {dis_adj}.",
        "Get that {dis_adj} {noun} away from me.",
        "That smells horrible, how {dis_adj}.",
    ),
}
#: Adjectives that describe feelings in LibriSpeech narration.
FEELINGS = tuple(
    EMOTION_SLOTS["ang_adj"]
    + EMOTION_SLOTS["hap_adj"]
    + EMOTION_SLOTS["exc_adj"]
    + EMOTION_SLOTS["sad_adj"]
    + EMOTION_SLOTS["fea_adj"]
    + EMOTION_SLOTS["dis_adj"]
    + ["furious", "angry", "excited", "amazed", "annoyed", "disgusted"]
)

# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _plural(noun: str) -> str:
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if re.search(r"(s|x|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


#: Template slots filled by one word (or phrase) of a list; ``{nouns}``,
#: ``{past}``, ``{base}``, ``{a_adj}`` and ``{quote}`` have rules of their own.
WORD_SLOTS = {
    "name": NAMES,
    "noun": NOUNS,
    "place": PLACES,
    "adj": ADJECTIVES,
    "intrans": INTRANSITIVE_PAST,
    "adverb": ADVERBS,
    "prep": PREPOSITIONS,
    "time": TIMES,
    "day": DAYS,
    "number": NUMBERS,
    "family": FAMILY,
    "pron": PRONOUNS,
    "feeling": FEELINGS,
}


def _fill(template: str, rng: np.random.Generator) -> str:
    """Fills a template's ``{slot}`` fields with words drawn from ``rng``."""

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    used: Dict[str, str] = {}

    def value(slot: str) -> str:
        key = slot.lower()
        if key.startswith("a_adj"):
            adj = pick(ADJECTIVES)
            return f"{_article(adj)} {adj}"
        base = re.sub(r"\d+$", "", key)
        if base in WORD_SLOTS:
            return pick(WORD_SLOTS[base])
        if base == "nouns":
            return _plural(pick(NOUNS))
        if base == "past":
            return pick(VERBS)[1]
        if base == "base":
            return pick(VERBS)[0]
        if base == "quote":
            # Conversational lines of every class, so that the ASR knows the
            # words of the IEMOCAP-like corpus.
            label = pick(("neu", "neu", "neu") + tuple(EMOTION_TEMPLATES))
            return neutral_sentence(rng) if label == "neu" else emotional_sentence(label, rng)
        if key in EMOTION_SLOTS:
            return pick(EMOTION_SLOTS[key])
        raise KeyError(f"unknown template slot {{{slot}}} in {template!r}")

    def substitute(match: "re.Match[str]") -> str:
        slot = match.group(1)
        if slot not in used or slot.lower() in ("ang_adj", "exc_adj"):
            used[slot] = value(slot)
        word = used[slot]
        if slot[0].isupper():
            word = word[0].upper() + word[1:]
        return word

    text = re.sub(r"\{(\w+)\}", substitute, template)
    # "I" keeps its capital; a pronoun that starts a sentence is capitalised.
    return text[0].upper() + text[1:]


def neutral_sentence(rng: np.random.Generator) -> str:
    """A conversational sentence without emotion words.

    Example
    -------
    >>> s = neutral_sentence(np.random.default_rng(3))
    >>> isinstance(s, str) and s[-1] in ".?"
    True
    """
    return _fill(NEUTRAL_TEMPLATES[int(rng.integers(len(NEUTRAL_TEMPLATES)))], rng)


def emotional_sentence(label: str, rng: np.random.Generator) -> str:
    """A sentence in the wording of ``label`` (a key of EMOTION_TEMPLATES)."""
    templates = EMOTION_TEMPLATES[label]
    return _fill(templates[int(rng.integers(len(templates)))], rng)


def libri_sentence(rng: np.random.Generator) -> str:
    """A narrative sentence (one clause, sometimes two joined).

    Example
    -------
    >>> s = libri_sentence(np.random.default_rng(0))
    >>> s[0].isupper() and s[-1] in ".!?"
    True
    """
    n_clauses = 2 if rng.random() < 0.3 else 1
    clauses = []
    for _ in range(n_clauses):
        if rng.random() < 0.3:
            template = LIBRI_FEELING_TEMPLATES[int(rng.integers(len(LIBRI_FEELING_TEMPLATES)))]
        else:
            template = LIBRI_TEMPLATES[int(rng.integers(len(LIBRI_TEMPLATES)))]
        clauses.append(_fill(template, rng))
    return " ".join(clauses)


def transcript_words(text: str) -> str:
    """LibriSpeech-style transcript: upper-case words, apostrophes kept.

    Example
    -------
    >>> transcript_words("Okay, let me check the key first. It's fine!")
    "OKAY LET ME CHECK THE KEY FIRST IT'S FINE"
    """
    return " ".join(w.upper() for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", text))


def _words_of(templates: Sequence[str], slots: Sequence[str]) -> set:
    words = set()
    for t in templates:
        words.update(w.lower() for w in re.findall(r"[A-Za-z']+", re.sub(r"\{\w+\}", " ", t)))
    for s in slots:
        for item in EMOTION_SLOTS[s]:
            words.update(w.lower() for w in re.findall(r"[A-Za-z']+", item))
    return words


def neutral_words() -> set:
    """Every word neutral wording can produce (lower case)."""
    words = _words_of(NEUTRAL_TEMPLATES, ())
    for slot, seq in WORD_SLOTS.items():
        if slot == "feeling":  # feelings are emotion words, not neutral wording
            continue
        for item in seq:
            words.update(w.lower() for w in item.split())
    for base, past in VERBS:
        words.update((base.lower(), past.lower()))
    words.update(("an", "a"))
    return words


def class_words(label: str) -> set:
    """Words specific to the wording of ``label``: in its templates or slots,
    never in neutral wording.

    Example
    -------
    >>> {"hate", "furious"} <= class_words("ang")
    True
    >>> "table" in class_words("ang")
    False
    """
    templates = EMOTION_TEMPLATES[label]
    slots = sorted({s for t in templates for s in re.findall(r"\{(\w+)\}", t)} & set(EMOTION_SLOTS))
    return _words_of(templates, slots) - neutral_words()

