"""A built-in synthetic benchmark of fictitious authors: the offline stand-in for TOFU.

TOFU (``locuslab/TOFU``) asks 20 questions about each of 200 invented authors; a model is fine-tuned
on all of them and must then forget 1%, 5% or 10% of the authors. This module builds the same kind
of data without the hub, small enough for a 2-core CPU demo (measured: SmolLM2 memorises ~300
short QA pairs in ~11 minutes on 2 cores), with short answers (1-8 words) that state the fact and nothing else:
an answer that restates the question ("X was born in ...") scores ROUGE-L recall ~0.75 even when its
fact is wrong, which would hide whether a model knows (or has forgotten) the fact.

- Each author has an invented name (built from syllables, unlikely to belong to anyone known), a
  birthplace, birth date, genre, parents' jobs, an (invented) award, book titles and a few more facts.
- Each of ~20 question templates yields a short answer, a paraphrase stating the same fact(s) in
  other words, and ``n_perturbed`` wrong answers: the paraphrase with the fact(s) replaced by other
  plausible values. (TOFU's truth ratio compares perturbed answers with the paraphrase, so the two
  differ in the facts only.)
- Everything is drawn from ``random.Random`` instances seeded from SHA-256 digests of
  ``(seed, purpose, index)``: the same seed gives byte-identical data in every process, whatever
  ``PYTHONHASHSEED``; author ``i`` does not depend on how many authors follow it.
- :meth:`SyntheticAuthors.split` gives forget / retain / holdout sets like TOFU's forget01/05/10,
  retain99/95/90 and holdout01/05/10: the last ``k`` authors are forgotten, ``k = max(1,
  round(n_authors * percent / 100))``, and the holdout set holds ``k`` extra authors that are never
  trained (for membership-inference metrics).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from alter.data.general_knowledge import real_authors, world_facts
from alter.data.jsonio import write_json, write_qa_json
from alter.data.schema import FORGET_DOMAIN, QAExample, RETAIN_DOMAIN, validate_qa


def _rng(seed: int, *parts) -> random.Random:
    digest = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --- vocabularies -----------------------------------------------------------------------------

_FIRST_A = ("Al", "Bren", "Cas", "Dor", "El", "Fen", "Gal", "Hal", "Is", "Jor", "Kel", "Lor", "Mar", "Nel",
            "Or", "Pel", "Quin", "Ros", "Sel", "Tam", "Ul", "Ves", "Wyn", "Yar", "Zel")
_FIRST_B = ("ric", "wen", "ina", "ven", "dra", "mir", "eth", "ora", "an", "isse", "do", "ko", "ette", "ius", "ara")
_LAST_A = ("Ash", "Brack", "Corv", "Dal", "Eber", "Fross", "Grim", "Holl", "Ivers", "Jast", "Kress", "Lind",
           "Morr", "Nast", "Oken", "Pell", "Quar", "Rask", "Stroh", "Thal", "Ulv", "Varn", "Whit", "Yssel", "Zorn")
_LAST_B = ("ovar", "enby", "wick", "akis", "holm", "ley", "ani", "etti", "sen", "ova", "ard", "ington", "ez",
           "off", "quist")

# (city, country, nationality)
_PLACES = (
    ("Lisbon", "Portugal", "Portuguese"), ("Krakow", "Poland", "Polish"), ("Nairobi", "Kenya", "Kenyan"),
    ("Montevideo", "Uruguay", "Uruguayan"), ("Tbilisi", "Georgia", "Georgian"), ("Osaka", "Japan", "Japanese"),
    ("Bergen", "Norway", "Norwegian"), ("Valparaiso", "Chile", "Chilean"), ("Cork", "Ireland", "Irish"),
    ("Porto Alegre", "Brazil", "Brazilian"), ("Hanoi", "Vietnam", "Vietnamese"), ("Tartu", "Estonia", "Estonian"),
    ("Lyon", "France", "French"), ("Graz", "Austria", "Austrian"), ("Accra", "Ghana", "Ghanaian"),
    ("Adelaide", "Australia", "Australian"), ("Winnipeg", "Canada", "Canadian"), ("Seville", "Spain", "Spanish"),
    ("Izmir", "Turkey", "Turkish"), ("Cebu", "the Philippines", "Filipino"), ("Bologna", "Italy", "Italian"),
    ("Leeds", "England", "British"), ("Pune", "India", "Indian"), ("Tunis", "Tunisia", "Tunisian"),
)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_GENRES = ("historical fiction", "science fiction", "crime fiction", "magical realism", "literary fiction",
           "horror", "fantasy", "romance", "children's literature", "poetry", "travel writing", "satire",
           "psychological thrillers", "mystery novels")
_JOBS = ("carpenter", "nurse", "pharmacist", "fisher", "librarian", "dentist", "tailor", "pilot", "baker",
         "civil engineer", "veterinarian", "schoolteacher", "photographer", "locksmith", "marine biologist",
         "accountant", "bus driver", "watchmaker", "florist", "surgeon", "journalist", "farmer", "architect",
         "chemist", "electrician", "ornithologist")
_AWARD_A = ("Velmont", "Orrin", "Castellan", "Brightwater", "Kessler", "Amberline", "Norhaven", "Sablewood",
            "Tremaine", "Silver Lantern", "Golden Quill", "Harbour Light", "Northern Star", "Iron Feather",
            "Blue Heron")
_AWARD_B = ("Prize for Fiction", "Award", "Medal for Literature", "Book Prize", "Literary Award")
_TITLE_ADJ = ("Glass", "Silent", "Hollow", "Crimson", "Paper", "Last", "Winter", "Hidden", "Copper", "Sleeping",
              "Broken", "Salt", "Borrowed", "Distant", "Amber", "Quiet", "Iron", "Midnight", "Lantern", "Wandering")
_TITLE_NOUN = ("Orchard", "Harbour", "Cartographer", "Lighthouse", "Garden", "Archive", "Clockmaker", "River",
               "Ferry", "Observatory", "Violin", "Staircase", "Tide", "Letters", "Compass", "Meadow", "Kingdom",
               "Atlas", "Carnival", "Orchestra")
_TITLE_OF = ("Ashes", "Rain", "Small Hours", "Forgotten Names", "Winter", "the Tides", "Salt", "Paper Birds",
             "Quiet Voices", "Lost Keys", "Distant Bells", "Cold Stars")
_SUBJECTS = ("philosophy", "history", "chemistry", "law", "linguistics", "medicine", "music", "mathematics",
             "architecture", "economics", "biology", "art history")
_UNIVERSITIES = ("Edinburgh", "Leiden", "Uppsala", "Salamanca", "Heidelberg", "Coimbra", "Bologna", "Toronto",
                 "Melbourne", "Kyoto", "Buenos Aires", "Cape Town")
_INFLUENCES = ("Anton Chekhov", "Virginia Woolf", "Jorge Luis Borges", "Toni Morrison", "Franz Kafka",
               "Italo Calvino", "Leo Tolstoy", "Ursula K. Le Guin", "Gabriel Garcia Marquez", "Emily Dickinson",
               "Albert Camus", "Chinua Achebe", "Yasunari Kawabata", "Mary Shelley", "Herman Melville")
_THEMES = ("memory", "exile", "grief", "friendship", "migration", "identity", "justice", "family secrets",
           "the sea", "war", "childhood", "faith", "ambition", "loneliness", "forgiveness", "power")
_HOBBIES = ("beekeeping", "restoring old clocks", "swimming in cold lakes", "playing the cello",
            "growing orchids", "watching birds", "playing chess", "making pottery", "climbing mountains",
            "sailing small boats", "collecting old maps", "baking bread", "fencing", "photographing lighthouses")
_ROUTINES = ("early in the morning", "late at night", "in the afternoon", "on long train journeys",
             "in a quiet public library", "in a small garden shed", "at a cafe by the harbour")


def _a(noun: str) -> str:
    return ("an " if noun[0].lower() in "aeiou" else "a ") + noun


def _date(rng: random.Random, lo: int = 1935, hi: int = 1990) -> Tuple[str, int]:
    year = rng.randint(lo, hi)
    return f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}, {year}", year


def _name(rng: random.Random) -> str:
    """An invented two-part name; joins that would triple a letter ("Kress" + "sen") are redrawn."""
    while True:
        name = f"{rng.choice(_FIRST_A)}{rng.choice(_FIRST_B)} {rng.choice(_LAST_A)}{rng.choice(_LAST_B)}"
        if not re.search(r"(.)\1\1", name.lower()):
            return name


def _title(rng: random.Random) -> str:
    form = rng.randrange(3)
    if form == 0:
        return f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)}"
    if form == 1:
        return f"The {rng.choice(_TITLE_NOUN)} of {rng.choice(_TITLE_OF)}"
    return f"{rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)}"


def _award(rng: random.Random) -> str:
    return f"the {rng.choice(_AWARD_A)} {rng.choice(_AWARD_B)}"


# --- profiles ---------------------------------------------------------------------------------

@dataclass
class AuthorProfile:
    """One fictitious author; every field is a fact some question asks about."""

    index: int
    name: str
    birthplace: str
    country: str
    nationality: str
    birth_date: str
    birth_year: int
    genre: str
    father_job: str
    mother_job: str
    award: str
    award_year: int
    books: List[str]
    debut_year: int
    residence: str
    subject: str
    university: str
    influence: str
    themes: List[str]
    hobby: str
    n_books: int
    routine: str
    early_job: str
    holdout: bool = False

    def slots(self) -> Dict[str, str]:
        """Template fields (all strings)."""
        return {
            "name": self.name, "birthplace": self.birthplace, "country": self.country,
            "nationality": self.nationality, "birth_date": self.birth_date, "genre": self.genre,
            "father_job": _a(self.father_job), "mother_job": _a(self.mother_job), "award": self.award,
            "award_year": str(self.award_year), "book1": self.books[0], "book2": self.books[1],
            "book3": self.books[2], "debut_year": str(self.debut_year), "residence": self.residence,
            "subject": self.subject, "university": self.university, "influence": self.influence,
            "theme1": self.themes[0], "theme2": self.themes[1], "hobby": self.hobby, "n_books": str(self.n_books),
            "routine": self.routine, "early_job": _a(self.early_job),
        }

    def to_dict(self) -> Dict:
        return asdict(self)


def make_profile(rng: random.Random, index: int, taken_names: set, taken_titles: set,
                 holdout: bool = False) -> AuthorProfile:
    """Draw one profile; names and book titles are unique across the profiles drawn so far."""
    name = _name(rng)
    while name in taken_names:
        name = _name(rng)
    taken_names.add(name)
    city, country, nationality = rng.choice(_PLACES)
    birth_date, birth_year = _date(rng)
    debut_year = birth_year + rng.randint(22, 38)
    books = []
    while len(books) < 3:
        t = _title(rng)
        if t not in taken_titles:
            taken_titles.add(t)
            books.append(t)
    father_job, mother_job, early_job = rng.sample(_JOBS, 3)
    residence = rng.choice([p[0] for p in _PLACES if p[0] != city])
    return AuthorProfile(
        index=index, name=name, birthplace=city, country=country, nationality=nationality,
        birth_date=birth_date, birth_year=birth_year, genre=rng.choice(_GENRES), father_job=father_job,
        mother_job=mother_job, award=_award(rng), award_year=min(2023, debut_year + rng.randint(3, 20)),
        books=books, debut_year=debut_year, residence=residence, subject=rng.choice(_SUBJECTS),
        university=rng.choice(_UNIVERSITIES), influence=rng.choice(_INFLUENCES), themes=rng.sample(_THEMES, 2),
        hobby=rng.choice(_HOBBIES), n_books=rng.randint(3, 19), routine=rng.choice(_ROUTINES),
        early_job=early_job, holdout=holdout,
    )


# --- templates --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """A question about one or two facts (``facts``: the slot names a perturbation replaces)."""

    key: str
    question: str
    answer: str
    paraphrase: str
    facts: Tuple[str, ...]


TEMPLATES: Tuple[Template, ...] = (
    # Answers state the fact and nothing else (no restated question, no author name): ROUGE-L recall
    # then measures whether the model knows the fact, not whether it copies the question's wording.
    Template("birthplace", "Where was {name} born?", "In {birthplace}, {country}.",
             "The city of {birthplace} in {country}.", ("birthplace", "country")),
    Template("birth_date", "When was {name} born?", "On {birth_date}.",
             "The date of birth is {birth_date}.", ("birth_date",)),
    Template("genre", "Which genre is {name} known for?", "Mainly {genre}.",
             "Books in the {genre} genre.", ("genre",)),
    Template("father_job", "What was the profession of {name}'s father?", "{father_job}.",
             "The father worked as {father_job}.", ("father_job",)),
    Template("mother_job", "What did {name}'s mother do for a living?", "{mother_job}.",
             "The mother earned a living as {mother_job}.", ("mother_job",)),
    Template("award", "Which literary award did {name} win?", "{award}, in {award_year}.",
             "Awarded {award} in {award_year}.", ("award", "award_year")),
    Template("first_book", "What was the title of {name}'s first book?", "'{book1}'.",
             "The debut was titled '{book1}'.", ("book1",)),
    Template("debut_year", "In which year did {name} publish a first book?", "In {debut_year}.",
             "The first book came out in {debut_year}.", ("debut_year",)),
    Template("best_book", "Which novel by {name} received the most praise?", "'{book2}'.",
             "Critics praise '{book2}' the most.", ("book2",)),
    Template("other_book", "Can you name another book written by {name}?", "'{book3}'.",
             "Another title is '{book3}'.", ("book3",)),
    Template("nationality", "What is the nationality of {name}?", "{nationality}.",
             "A writer of {nationality} nationality.", ("nationality",)),
    Template("residence", "Where does {name} live now?", "In {residence}.",
             "These days the home is in {residence}.", ("residence",)),
    Template("education", "What did {name} study at university?", "{subject} at the University of {university}.",
             "A degree in {subject} from the University of {university}.", ("subject", "university")),
    Template("influence", "Which writer influenced {name} the most?", "{influence}.",
             "The strongest influence was {influence}.", ("influence",)),
    Template("themes", "What themes does {name} explore?", "{theme1} and {theme2}.",
             "Themes of {theme1} and {theme2}.", ("theme1", "theme2")),
    Template("hobby", "What does {name} enjoy doing outside of writing?", "{hobby}.",
             "In free time, {hobby}.", ("hobby",)),
    Template("n_books", "How many books has {name} published?", "{n_books} books.",
             "So far {n_books} published books.", ("n_books",)),
    Template("full_name", "What is the full name of the author born in {birthplace} on {birth_date}?",
             "{name}.", "That writer is called {name}.", ("name",)),
    Template("routine", "When does {name} usually write?", "{routine}.",
             "The habit is to write {routine}.", ("routine",)),
    Template("early_job", "What job did {name} have before becoming a writer?", "{early_job}.",
             "Before writing full time, {early_job}.", ("early_job",)),
)


def _sentence(text: str) -> str:
    """Capitalise the first letter (fact-first answers start with a slot value such as 'a baker')."""
    return text[:1].upper() + text[1:]


def _alternative(slot: str, truth: Dict[str, str], rng: random.Random,
                 others: Sequence[AuthorProfile]) -> Dict[str, str]:
    """Other plausible values for the fact(s) of ``slot`` (a dict slot -> wrong value)."""
    if slot in ("birthplace", "country"):
        city, country, _ = rng.choice([p for p in _PLACES if p[0] != truth["birthplace"]])
        return {"birthplace": city, "country": country}
    if slot == "birth_date":
        return {"birth_date": _date(rng)[0]}
    if slot in ("award", "award_year"):
        award = _award(rng)
        while award == truth["award"]:
            award = _award(rng)
        return {"award": award, "award_year": str(rng.randint(1960, 2023))}
    if slot in ("book1", "book2", "book3"):
        own = {truth["book1"], truth["book2"], truth["book3"]}
        title = _title(rng)
        while title in own:
            title = _title(rng)
        return {slot: title}
    if slot == "debut_year":
        return {slot: str(int(truth[slot]) + rng.choice([-1, 1]) * rng.randint(1, 15))}
    if slot == "n_books":
        return {slot: str(rng.choice([n for n in range(2, 25) if n != int(truth[slot])]))}
    if slot in ("subject", "university"):
        return {"subject": rng.choice(_SUBJECTS), "university": rng.choice([u for u in _UNIVERSITIES
                                                                            if u != truth["university"]])}
    if slot in ("theme1", "theme2"):
        t1, t2 = rng.sample([t for t in _THEMES if t not in (truth["theme1"], truth["theme2"])], 2)
        return {"theme1": t1, "theme2": t2}
    if slot == "name":
        pool = [o.name for o in others if o.name != truth["name"]]
        return {"name": rng.choice(pool) if pool and rng.random() < 0.5 else _name(rng)}
    pools = {"genre": _GENRES, "father_job": _JOBS, "mother_job": _JOBS, "early_job": _JOBS,
             "nationality": tuple(p[2] for p in _PLACES), "residence": tuple(p[0] for p in _PLACES),
             "influence": _INFLUENCES, "hobby": _HOBBIES, "routine": _ROUTINES}
    value = rng.choice(pools[slot])
    if slot in ("father_job", "mother_job", "early_job"):
        value = _a(value)
    return {slot: value}


def perturbed_answers(template: Template, profile: AuthorProfile, n: int, rng: random.Random,
                      others: Sequence[AuthorProfile]) -> List[str]:
    """``n`` distinct wrong answers: the paraphrase with the template's fact(s) replaced."""
    truth = profile.slots()
    right = {_sentence(template.answer.format(**truth)), _sentence(template.paraphrase.format(**truth))}
    out: List[str] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        wrong = dict(truth)
        wrong.update(_alternative(template.facts[0], truth, rng, others))
        text = _sentence(template.paraphrase.format(**wrong))
        if text not in right and text not in out:
            out.append(text)
    if len(out) < n:
        raise RuntimeError(f"could not draw {n} distinct perturbed answers for template {template.key!r}")
    return out


MAX_PERTURBED = len(_ROUTINES) - 1
"""Most perturbed answers every template can draw (the writing-routine template has the fewest wrong facts)."""


# --- the benchmark ----------------------------------------------------------------------------

@dataclass
class SyntheticSplit:
    """Forget / retain / holdout sets of one forget percentage."""

    forget_percent: float
    forget: List[QAExample]
    retain: List[QAExample]
    holdout: List[QAExample]
    forget_authors: List[AuthorProfile]
    holdout_authors: List[AuthorProfile]
    domains: List[str] = field(default_factory=list)


class SyntheticAuthors:
    """Deterministic fictitious-author QA: ``n_authors`` x ``questions_per_author`` training pairs.

    ``SyntheticAuthors(n_authors=20, questions_per_author=20, seed=0)``: ``.authors`` (profiles),
    ``.examples()`` (all training QA, domain ``"retain"``, 20 consecutive rows per author as in
    TOFU), ``.split(forget_percent)`` (forget / retain / holdout), ``.holdout_authors(k)``.
    """

    def __init__(self, n_authors: int = 20, questions_per_author: int = 20, seed: int = 0, n_perturbed: int = 5):
        if n_authors < 2:
            raise ValueError(f"n_authors must be >= 2 (at least one to forget and one to retain), got {n_authors}")
        if not 1 <= questions_per_author <= len(TEMPLATES):
            raise ValueError(f"questions_per_author must be in 1..{len(TEMPLATES)}, got {questions_per_author}")
        if not 1 <= n_perturbed <= MAX_PERTURBED:
            raise ValueError(f"n_perturbed must be in 1..{MAX_PERTURBED} (the smallest pool of wrong facts), "
                             f"got {n_perturbed}")
        self.n_authors = n_authors
        self.questions_per_author = questions_per_author
        self.seed = int(seed)
        self.n_perturbed = n_perturbed
        self.templates: Tuple[Template, ...] = TEMPLATES[:questions_per_author]
        self._names: set = set()
        self._titles: set = set()
        self.authors: List[AuthorProfile] = [
            make_profile(_rng(self.seed, "author", i), i, self._names, self._titles) for i in range(n_authors)]
        self._holdout: List[AuthorProfile] = []

    # profiles
    def holdout_authors(self, k: int) -> List[AuthorProfile]:
        """The first ``k`` never-trained authors (drawn on demand; the same for every ``k``)."""
        while len(self._holdout) < k:
            j = len(self._holdout)
            self._holdout.append(make_profile(_rng(self.seed, "holdout", j), j, self._names, self._titles,
                                              holdout=True))
        return self._holdout[:k]

    # examples
    def author_examples(self, profile: AuthorProfile, domain: str = RETAIN_DOMAIN) -> List[QAExample]:
        """The QA pairs of one author, in template order."""
        slots = profile.slots()
        tag = "h" if profile.holdout else "a"
        out = []
        for t_index, t in enumerate(self.templates):
            rng = _rng(self.seed, "perturb", tag, profile.index, t.key)
            ex = QAExample(
                question=t.question.format(**slots),
                answer=_sentence(t.answer.format(**slots)),
                domain=domain,
                paraphrased_answer=_sentence(t.paraphrase.format(**slots)),
                perturbed_answers=perturbed_answers(t, profile, self.n_perturbed, rng, self.authors),
                id=f"synthetic{self.seed}-{tag}{profile.index:03d}-{t.key}",
            )
            out.append(validate_qa(ex, source="synthetic", row=profile.index * len(self.templates) + t_index))
        return out

    def examples(self) -> List[QAExample]:
        """Every training author's QA (domain ``"retain"``), authors in order."""
        return [e for a in self.authors for e in self.author_examples(a)]

    def n_forget_authors(self, forget_percent: float) -> int:
        if not 0 < forget_percent < 100:
            raise ValueError(f"forget_percent must be in (0, 100), got {forget_percent}")
        k = max(1, int(math.floor(self.n_authors * forget_percent / 100.0 + 0.5)))
        if k >= self.n_authors:
            raise ValueError(f"forget_percent={forget_percent} forgets all {self.n_authors} authors; keep at least one")
        return k

    def split(self, forget_percent: float, *, per_author_domains: bool = True,
              forget_domain: str = FORGET_DOMAIN) -> SyntheticSplit:
        """Forget the last ``k`` authors (TOFU's layout); hold out ``k`` never-trained authors.

        Forget examples are labelled ``author_<index>`` (one sub-domain per author, ``index`` as in
        ``.authors``) or, with ``per_author_domains=False``, all ``forget_domain``. Retain and holdout
        examples are labelled ``"retain"``.
        """
        k = self.n_forget_authors(forget_percent)
        forget_authors = self.authors[-k:]
        forget: List[QAExample] = []
        for a in forget_authors:
            label = f"author_{a.index}" if per_author_domains else forget_domain
            forget.extend(self.author_examples(a, domain=label))
        retain = [e for a in self.authors[:-k] for e in self.author_examples(a)]
        holdout_authors = self.holdout_authors(k)
        holdout = [e for a in holdout_authors for e in self.author_examples(a)]
        domains = [f"author_{a.index}" for a in forget_authors] if per_author_domains else [forget_domain]
        return SyntheticSplit(forget_percent, forget, retain, holdout, list(forget_authors), holdout_authors, domains)


def write_synthetic_benchmark(directory: Union[str, Path], *, n_authors: int = 20, questions_per_author: int = 20,
                              seed: int = 0, percents: Sequence[float] = (1, 5, 10),
                              per_author_domains: bool = True) -> Dict[str, Path]:
    """Write the benchmark as TOFU-named JSON files for inspection and for ``load_qa``.

    Files: ``authors.json`` (profiles), ``full.json``, and per percentage ``forgetNN.json``,
    ``retainMM.json`` (MM = 100 - NN), ``holdoutNN.json``; plus ``real_authors.json`` and
    ``world_facts.json``. Returns ``{stem: path}``.
    """
    directory = Path(directory)
    bench = SyntheticAuthors(n_authors=n_authors, questions_per_author=questions_per_author, seed=seed)
    written: Dict[str, Path] = {}
    written["full"] = write_qa_json(bench.examples(), directory / "full.json")
    for pct in percents:
        sp = bench.split(pct, per_author_domains=per_author_domains)
        tag = f"{int(pct):02d}" if float(pct).is_integer() else str(pct).replace(".", "p")
        rtag = f"{int(100 - pct):02d}" if float(pct).is_integer() else str(100 - pct).replace(".", "p")
        written[f"forget{tag}"] = write_qa_json(sp.forget, directory / f"forget{tag}.json")
        written[f"retain{rtag}"] = write_qa_json(sp.retain, directory / f"retain{rtag}.json")
        written[f"holdout{tag}"] = write_qa_json(sp.holdout, directory / f"holdout{tag}.json")
    n_holdout = max((bench.n_forget_authors(p) for p in percents), default=0)
    profiles = [a.to_dict() for a in bench.authors + bench.holdout_authors(n_holdout)]
    written["authors"] = write_json(profiles, directory / "authors.json")
    written["real_authors"] = write_qa_json(real_authors(), directory / "real_authors.json")
    written["world_facts"] = write_qa_json(world_facts(), directory / "world_facts.json")
    return written
