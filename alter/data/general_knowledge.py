"""Built-in general-knowledge QA sets: the offline stand-ins for TOFU's ``real_authors`` and
``world_facts`` model-utility sets.

TOFU measures model utility on questions about real authors and world facts that a pretrained model
already knows and an unlearned model must keep knowing. These two sets play that role offline:
well-known facts (famous novels' authors; capitals, planets, everyday science) that even a small
instruct model is likely to answer. Every item has a short answer sentence, a paraphrase stating the
same fact in other words, and perturbed answers: the paraphrase with a plausible wrong fact (the form
TOFU's truth ratio compares: wrong answers against the paraphrased one). Written for ALTER.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from alter.data.schema import QAExample, RETAIN_DOMAIN, validate_qa


@dataclass(frozen=True)
class FactItem:
    question: str
    fact: str
    wrong: Tuple[str, ...]
    answer_tpl: str
    para_tpl: str


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


_WROTE = ("It was written by {}.", "{} is the author of this work.")


def _book(title: str, author: str, *wrong: str) -> FactItem:
    return FactItem(f"Which writer is the author of '{title}'?", author, tuple(wrong), *_WROTE)


REAL_AUTHORS: Tuple[FactItem, ...] = (
    _book("Pride and Prejudice", "Jane Austen", "Charlotte Bronte", "George Eliot", "Mary Shelley",
          "Louisa May Alcott", "Virginia Woolf"),
    _book("Nineteen Eighty-Four", "George Orwell", "Aldous Huxley", "H. G. Wells", "Ray Bradbury",
          "Arthur Koestler", "Kurt Vonnegut"),
    FactItem("Who wrote the tragedy 'Romeo and Juliet'?", "William Shakespeare",
             ("Christopher Marlowe", "Ben Jonson", "John Milton", "Geoffrey Chaucer", "Oscar Wilde"), *_WROTE),
    FactItem("Which author created the detective Sherlock Holmes?", "Arthur Conan Doyle",
             ("Agatha Christie", "Edgar Allan Poe", "Raymond Chandler", "Wilkie Collins", "G. K. Chesterton"),
             "Sherlock Holmes was created by {}.", "{} invented this detective."),
    FactItem("Which author created the detective Hercule Poirot?", "Agatha Christie",
             ("Dorothy L. Sayers", "Arthur Conan Doyle", "Ngaio Marsh", "Georges Simenon", "P. D. James"),
             "Hercule Poirot was created by {}.", "{} invented this detective."),
    _book("The Adventures of Tom Sawyer", "Mark Twain", "Jack London", "Herman Melville", "Nathaniel Hawthorne",
          "Bret Harte", "Washington Irving"),
    _book("War and Peace", "Leo Tolstoy", "Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev", "Nikolai Gogol",
          "Alexander Pushkin"),
    _book("Crime and Punishment", "Fyodor Dostoevsky", "Leo Tolstoy", "Ivan Turgenev", "Nikolai Gogol",
          "Maxim Gorky", "Anton Chekhov"),
    _book("Don Quixote", "Miguel de Cervantes", "Lope de Vega", "Federico Garcia Lorca", "Benito Perez Galdos",
          "Dante Alighieri", "Francois Rabelais"),
    _book("The Old Man and the Sea", "Ernest Hemingway", "John Steinbeck", "William Faulkner",
          "F. Scott Fitzgerald", "Herman Melville", "Jack London"),
    _book("The Great Gatsby", "F. Scott Fitzgerald", "Ernest Hemingway", "Sinclair Lewis", "Theodore Dreiser",
          "Edith Wharton", "John Dos Passos"),
    _book("Harry Potter and the Philosopher's Stone", "J. K. Rowling", "Roald Dahl", "C. S. Lewis",
          "Philip Pullman", "Terry Pratchett", "Rick Riordan"),
    _book("The Hobbit", "J. R. R. Tolkien", "C. S. Lewis", "George R. R. Martin", "Terry Pratchett",
          "Ursula K. Le Guin", "Lewis Carroll"),
    _book("Alice's Adventures in Wonderland", "Lewis Carroll", "Edward Lear", "J. M. Barrie", "Kenneth Grahame",
          "Beatrix Potter", "Rudyard Kipling"),
    _book("Oliver Twist", "Charles Dickens", "William Thackeray", "Thomas Hardy", "Anthony Trollope",
          "Wilkie Collins", "George Eliot"),
    _book("Frankenstein", "Mary Shelley", "Bram Stoker", "Jane Austen", "Emily Bronte", "Ann Radcliffe",
          "Robert Louis Stevenson"),
    _book("Dracula", "Bram Stoker", "Mary Shelley", "Edgar Allan Poe", "Sheridan Le Fanu", "H. P. Lovecraft",
          "Robert Louis Stevenson"),
    _book("Moby-Dick", "Herman Melville", "Nathaniel Hawthorne", "Mark Twain", "Jack London", "Walt Whitman",
          "James Fenimore Cooper"),
    _book("One Hundred Years of Solitude", "Gabriel Garcia Marquez", "Mario Vargas Llosa", "Jorge Luis Borges",
          "Julio Cortazar", "Isabel Allende", "Pablo Neruda"),
    FactItem("Which ancient poet is credited with the epic 'The Odyssey'?", "Homer",
             ("Virgil", "Sophocles", "Ovid", "Euripides", "Hesiod"),
             "It is credited to {}.", "{} is the poet traditionally named as its author."),
    _book("The Divine Comedy", "Dante Alighieri", "Giovanni Boccaccio", "Francesco Petrarca", "Virgil",
          "Ludovico Ariosto", "Torquato Tasso"),
    _book("Les Miserables", "Victor Hugo", "Alexandre Dumas", "Gustave Flaubert", "Emile Zola",
          "Honore de Balzac", "Stendhal"),
    _book("The Three Musketeers", "Alexandre Dumas", "Victor Hugo", "Jules Verne", "Gustave Flaubert",
          "Emile Zola", "Honore de Balzac"),
    _book("Twenty Thousand Leagues Under the Seas", "Jules Verne", "H. G. Wells", "Alexandre Dumas",
          "Arthur Conan Doyle", "Victor Hugo", "Robert Louis Stevenson"),
    _book("The Time Machine", "H. G. Wells", "Jules Verne", "Aldous Huxley", "Isaac Asimov", "Arthur C. Clarke",
          "George Orwell"),
    _book("To Kill a Mockingbird", "Harper Lee", "Truman Capote", "Flannery O'Connor", "Carson McCullers",
          "Eudora Welty", "John Steinbeck"),
    _book("The Catcher in the Rye", "J. D. Salinger", "Jack Kerouac", "John Updike", "Kurt Vonnegut",
          "Saul Bellow", "Philip Roth"),
    _book("Brave New World", "Aldous Huxley", "George Orwell", "H. G. Wells", "Ray Bradbury", "Anthony Burgess",
          "Evelyn Waugh"),
    _book("Fahrenheit 451", "Ray Bradbury", "Isaac Asimov", "Philip K. Dick", "George Orwell", "Aldous Huxley",
          "Arthur C. Clarke"),
    _book("The Grapes of Wrath", "John Steinbeck", "William Faulkner", "Ernest Hemingway", "Upton Sinclair",
          "Sinclair Lewis", "John Dos Passos"),
    _book("Jane Eyre", "Charlotte Bronte", "Emily Bronte", "Jane Austen", "George Eliot", "Elizabeth Gaskell",
          "Anne Bronte"),
    _book("Wuthering Heights", "Emily Bronte", "Charlotte Bronte", "Anne Bronte", "Jane Austen",
          "Elizabeth Gaskell", "George Eliot"),
    _book("The Little Prince", "Antoine de Saint-Exupery", "Albert Camus", "Jules Verne", "Victor Hugo",
          "Jean-Paul Sartre", "Marcel Proust"),
    _book("The Metamorphosis", "Franz Kafka", "Thomas Mann", "Hermann Hesse", "Robert Musil",
          "Rainer Maria Rilke", "Stefan Zweig"),
    _book("Treasure Island", "Robert Louis Stevenson", "Daniel Defoe", "Jonathan Swift", "Walter Scott",
          "Rudyard Kipling", "Arthur Conan Doyle"),
    _book("Robinson Crusoe", "Daniel Defoe", "Jonathan Swift", "Robert Louis Stevenson", "Henry Fielding",
          "Samuel Richardson", "Walter Scott"),
    _book("Gulliver's Travels", "Jonathan Swift", "Daniel Defoe", "Laurence Sterne", "Henry Fielding",
          "Alexander Pope", "Samuel Johnson"),
)


def _capital(country: str, city: str, *wrong: str) -> FactItem:
    return FactItem(f"What is the capital city of {country}?", city, tuple(wrong),
                    f"The capital of {country} is {{}}.", f"{{}} is the seat of government of {country}.")


WORLD_FACTS: Tuple[FactItem, ...] = (
    _capital("France", "Paris", "Lyon", "Marseille", "Brussels", "Nice", "Bordeaux"),
    _capital("Japan", "Tokyo", "Kyoto", "Osaka", "Seoul", "Beijing", "Yokohama"),
    _capital("Italy", "Rome", "Milan", "Naples", "Florence", "Venice", "Turin"),
    _capital("Germany", "Berlin", "Munich", "Hamburg", "Frankfurt", "Vienna", "Cologne"),
    _capital("Spain", "Madrid", "Barcelona", "Seville", "Valencia", "Lisbon", "Bilbao"),
    _capital("Canada", "Ottawa", "Toronto", "Montreal", "Vancouver", "Calgary", "Quebec City"),
    _capital("Egypt", "Cairo", "Alexandria", "Luxor", "Giza", "Khartoum", "Tunis"),
    _capital("Russia", "Moscow", "Saint Petersburg", "Novosibirsk", "Minsk", "Kazan", "Kyiv"),
    _capital("the United Kingdom", "London", "Manchester", "Edinburgh", "Birmingham", "Liverpool", "Dublin"),
    _capital("China", "Beijing", "Shanghai", "Hong Kong", "Guangzhou", "Tokyo", "Shenzhen"),
    FactItem("Which is the largest planet in the solar system?", "Jupiter",
             ("Saturn", "Neptune", "Uranus", "Earth", "Mars"),
             "The largest planet in the solar system is {}.", "{} is the biggest planet orbiting the Sun."),
    FactItem("Which planet is known as the Red Planet?", "Mars", ("Venus", "Jupiter", "Mercury", "Saturn", "Neptune"),
             "The Red Planet is {}.", "{} is the planet people call the Red Planet."),
    FactItem("Which planet is closest to the Sun?", "Mercury", ("Venus", "Mars", "Earth", "Jupiter", "Neptune"),
             "The planet closest to the Sun is {}.", "{} orbits nearer to the Sun than any other planet."),
    FactItem("What is the chemical formula of water?", "H2O", ("CO2", "NaCl", "O2", "H2O2", "CH4"),
             "The chemical formula of water is {}.", "Water has the formula {}."),
    FactItem("What is the chemical symbol for gold?", "Au", ("Ag", "Fe", "Gd", "Pb", "Cu"),
             "The chemical symbol for gold is {}.", "Gold is written {} in chemistry."),
    FactItem("Which element has the chemical symbol O?", "oxygen", ("osmium", "gold", "hydrogen", "nitrogen", "carbon"),
             "The symbol O stands for {}.", "{} is the element written as O."),
    FactItem("What is the largest ocean on Earth?", "Pacific",
             ("Atlantic", "Indian", "Arctic", "Southern", "Caribbean"),
             "The largest ocean on Earth is the {} Ocean.", "No ocean is larger than the {} Ocean."),
    FactItem("What is the longest river in Africa?", "Nile", ("Congo", "Niger", "Zambezi", "Orange", "Limpopo"),
             "The longest river in Africa is the {}.", "The {} is the river that runs longest across Africa."),
    FactItem("What is the highest mountain in the world?", "Mount Everest",
             ("K2", "Kangchenjunga", "Mont Blanc", "Kilimanjaro", "Aconcagua"),
             "The highest mountain in the world is {}.", "{} is the tallest peak on Earth."),
    FactItem("At what temperature in degrees Celsius does water boil at sea level?", "100",
             ("90", "80", "120", "110", "150"),
             "Water boils at {} degrees Celsius at sea level.",
             "At sea level the boiling point of water is {} degrees Celsius."),
    FactItem("At what temperature in degrees Celsius does water freeze?", "zero",
             ("ten", "minus ten", "thirty-two", "four", "minus four"),
             "Water freezes at {} degrees Celsius.", "The freezing point of water is {} degrees Celsius."),
    FactItem("How many continents are there on Earth?", "seven", ("five", "six", "eight", "nine", "four"),
             "There are {} continents on Earth.", "The Earth is divided into {} continents."),
    FactItem("Who painted the Mona Lisa?", "Leonardo da Vinci",
             ("Michelangelo", "Raphael", "Rembrandt", "Vincent van Gogh", "Sandro Botticelli"),
             "The Mona Lisa was painted by {}.", "{} is the artist who painted the Mona Lisa."),
    FactItem("Who was the first person to walk on the Moon?", "Neil Armstrong",
             ("Buzz Aldrin", "Yuri Gagarin", "John Glenn", "Michael Collins", "Alan Shepard"),
             "The first person to walk on the Moon was {}.", "{} was the first human to set foot on the Moon."),
    FactItem("Which scientist developed the theory of relativity?", "Albert Einstein",
             ("Isaac Newton", "Niels Bohr", "Max Planck", "Galileo Galilei", "Stephen Hawking"),
             "The theory of relativity was developed by {}.", "{} is the scientist behind the theory of relativity."),
    FactItem("What is the currency of Japan?", "yen", ("yuan", "won", "dollar", "rupee", "baht"),
             "The currency of Japan is the {}.", "Japan uses the {} as its money."),
    FactItem("Which is the largest country in the world by area?", "Russia",
             ("Canada", "China", "the United States", "Brazil", "Australia"),
             "The largest country by area is {}.", "No country covers more land than {}."),
    FactItem("On which continent is Egypt?", "Africa",
             ("Asia", "Europe", "South America", "Australia", "North America"),
             "Egypt is on the continent of {}.", "{} is the continent where Egypt lies."),
    FactItem("Which gas do plants take in from the air for photosynthesis?", "carbon dioxide",
             ("oxygen", "nitrogen", "hydrogen", "helium", "methane"),
             "Plants take in {} for photosynthesis.", "For photosynthesis, plants absorb {} from the air."),
    FactItem("What is the hardest natural substance?", "diamond", ("quartz", "granite", "iron", "gold", "topaz"),
             "The hardest natural substance is {}.", "No natural material is harder than {}."),
    FactItem("How many days are there in a leap year?", "366", ("365", "364", "360", "367", "368"),
             "A leap year has {} days.", "There are {} days in a leap year."),
    FactItem("In which country is the Great Wall?", "China", ("Japan", "India", "Mongolia", "Korea", "Russia"),
             "The Great Wall is in {}.", "{} is the country where the Great Wall stands."),
    FactItem("In which city is the Statue of Liberty?", "New York",
             ("Washington", "Boston", "Chicago", "Philadelphia", "Los Angeles"),
             "The Statue of Liberty is in {}.", "{} is the city where the Statue of Liberty stands."),
    FactItem("In which city is the Colosseum?", "Rome", ("Athens", "Naples", "Florence", "Milan", "Istanbul"),
             "The Colosseum is in {}.", "{} is the city where the Colosseum stands."),
    FactItem("What is the main language spoken in Brazil?", "Portuguese",
             ("Spanish", "French", "Italian", "English", "Dutch"),
             "The main language of Brazil is {}.", "Most people in Brazil speak {}."),
    FactItem("What is the largest hot desert in the world?", "Sahara",
             ("Gobi", "Kalahari", "Arabian", "Atacama", "Mojave"),
             "The largest hot desert is the {}.", "The {} is the biggest hot desert on Earth."),
    FactItem("How many legs does a spider have?", "eight", ("six", "ten", "four", "twelve", "five"),
             "A spider has {} legs.", "Spiders walk on {} legs."),
    FactItem("Which organ pumps blood through the human body?", "the heart",
             ("the liver", "the lungs", "the kidneys", "the brain", "the stomach"),
             "The organ that pumps blood is {}.", "{} pushes blood around the body."),
)


def fact_examples(items: Sequence[FactItem], *, prefix: str, n_perturbed: int = 5,
                  domain: str = RETAIN_DOMAIN) -> List[QAExample]:
    """QA examples of ``items``: answer and paraphrase state the fact, perturbed answers a wrong one."""
    out = []
    for i, it in enumerate(items):
        if not 1 <= n_perturbed <= len(it.wrong):
            raise ValueError(f"n_perturbed must be in 1..{len(it.wrong)}, got {n_perturbed}")
        ex = QAExample(
            question=it.question,
            answer=_cap(it.answer_tpl.format(it.fact)),
            domain=domain,
            paraphrased_answer=_cap(it.para_tpl.format(it.fact)),
            perturbed_answers=[_cap(it.para_tpl.format(w)) for w in it.wrong[:n_perturbed]],
            id=f"{prefix}-{i:02d}",
        )
        out.append(validate_qa(ex, source=prefix, row=i))
    return out


def real_authors(n_perturbed: int = 5) -> List[QAExample]:
    """Questions on famous books' authors (stand-in for TOFU ``real_authors_perturbed``)."""
    return fact_examples(REAL_AUTHORS, prefix="real_authors", n_perturbed=n_perturbed)


def world_facts(n_perturbed: int = 5) -> List[QAExample]:
    """Questions on capitals, planets and everyday science (stand-in for TOFU ``world_facts_perturbed``)."""
    return fact_examples(WORLD_FACTS, prefix="world_facts", n_perturbed=n_perturbed)
