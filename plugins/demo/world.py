"""The demo movie world: movies, genres, people, their knowledge graph and a concept graph.

Everything is derived from one `random.Random(seed)` (never the global RNG), so
a seed always yields the same world; :func:`build_world` caches it per seed so
the dataset and the knowledge sources of one pipeline share a single instance.

Entity-graph node names: ``movie:<title with year>``, ``genre:<key>``,
``person:<full name>``, ``decade:<1990s>``.  Relations: has_genre, directed_by,
starring, released_in, sequel_of.  The concept (word) graph has one node per
lower-case word with RelatedTo / Synonym / IsA edges, ConceptNet style.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

from . import lexicon as lx

RELATIONS = ("has_genre", "directed_by", "starring", "released_in", "sequel_of")
CONCEPT_RELATIONS = ("RelatedTo", "Synonym", "IsA")


@dataclass
class Person:
    name: str
    role: str  # "actor" | "director"
    genres: tuple[int, ...]  # indices into lexicon.GENRES the person mostly works in

    @property
    def node(self) -> str:
        return f"person:{self.name}"


@dataclass
class Movie:
    id: str  # item id, e.g. "m0042"
    title: str  # "The Silent Harbor (1998)" -- also the surface form in dialogues
    year: int
    genres: tuple[int, ...]
    director: int  # index into World.people
    actors: tuple[int, ...]
    sequel_of: int | None = None  # index into World.movies
    popularity: float = 1.0  # Zipf weight, used by the dialogue generator

    @property
    def node(self) -> str:
        return f"movie:{self.title}"

    @property
    def decade(self) -> str:
        return f"{self.year // 10 * 10}s"

    @property
    def people(self) -> tuple[int, ...]:
        return (self.director, *self.actors)


@dataclass
class World:
    seed: int
    movies: list[Movie]
    people: list[Person]
    movies_by_genre: dict[int, list[int]] = field(default_factory=dict)
    movies_by_person: dict[int, list[int]] = field(default_factory=dict)
    sequels: dict[int, list[int]] = field(default_factory=dict)  # movie -> its sequels


def genre_node(genre: int) -> str:
    return f"genre:{lx.GENRES[genre].key}"


def _make_people(rng: random.Random, n_people: int) -> list[Person]:
    names = [f"{first} {last}" for first in lx.FIRST_NAMES for last in lx.LAST_NAMES]
    rng.shuffle(names)
    if n_people > len(names):
        raise ValueError(f"at most {len(names)} demo people")
    people = []
    for i, name in enumerate(names[:n_people]):
        role = "director" if i % 4 == 0 else "actor"  # about a quarter direct
        genres = tuple(rng.sample(range(len(lx.GENRES)), rng.choice((1, 2, 2))))
        people.append(Person(name, role, genres))
    return people


def _make_title(rng: random.Random, used: set[str]) -> str:
    while True:
        pattern = rng.choice(lx.TITLE_PATTERNS)
        noun, noun2 = rng.sample(lx.TITLE_NOUNS, 2)
        title = pattern.format(adj=rng.choice(lx.TITLE_ADJECTIVES), noun=noun, noun2=noun2)
        if title not in used:
            used.add(title)
            return title


def _pick_person(rng: random.Random, pool: list[int], people: list[Person], genres: tuple[int, ...]) -> int:
    """A person from `pool`, mostly one who works in one of `genres` (keeps the KG clustered)."""
    fitting = [p for p in pool if set(people[p].genres) & set(genres)]
    return rng.choice(fitting if fitting and rng.random() < 0.85 else pool)


def _make_movies(rng: random.Random, n_items: int, people: list[Person]) -> list[Movie]:
    directors = [i for i, p in enumerate(people) if p.role == "director"]
    actors = [i for i, p in enumerate(people) if p.role == "actor"]
    used: set[str] = set()
    movies: list[Movie] = []
    for i in range(n_items):
        if movies and rng.random() < 0.07:  # a sequel: same genres, director, part of the cast
            base_index = rng.randrange(len(movies))
            base = movies[base_index]
            if base.sequel_of is None and f"{base.title.rsplit(' (', 1)[0]} II" not in used:
                name = f"{base.title.rsplit(' (', 1)[0]} II"
                used.add(name)
                year = min(base.year + rng.randint(2, 5), 2019)
                cast = tuple(dict.fromkeys(base.actors[:2] + (_pick_person(rng, actors, people, base.genres),)))
                movies.append(Movie(f"m{i:04d}", f"{name} ({year})", year, base.genres, base.director,
                                    cast, sequel_of=base_index))
                continue
        genres = tuple(rng.sample(range(len(lx.GENRES)), 2 if rng.random() < 0.45 else 1))
        year = rng.randint(1970, 2019)
        director = _pick_person(rng, directors, people, genres)
        cast = tuple(dict.fromkeys(_pick_person(rng, actors, people, genres) for _ in range(rng.randint(2, 3))))
        movies.append(Movie(f"m{i:04d}", f"{_make_title(rng, used)} ({year})", year, genres, director, cast))
    # Mildly skewed popularity (Zipf exponent 0.6 over a random order): a baseline, not an oracle.
    order = list(range(n_items))
    rng.shuffle(order)
    for rank, index in enumerate(order):
        movies[index].popularity = 1.0 / (rank + 1) ** 0.6
    return movies


@lru_cache(maxsize=8)
def build_world(seed: int = 0, n_items: int = 300, n_people: int = 150) -> World:
    """The world for `seed`; cached so every demo component of one seed sees the same instance."""
    rng = random.Random(f"demo-world-{seed}")
    people = _make_people(rng, n_people)
    movies = _make_movies(rng, n_items, people)
    world = World(seed, movies, people)
    for m_index, movie in enumerate(movies):
        for g in movie.genres:
            world.movies_by_genre.setdefault(g, []).append(m_index)
        for p in movie.people:
            world.movies_by_person.setdefault(p, []).append(m_index)
        if movie.sequel_of is not None:
            world.sequels.setdefault(movie.sequel_of, []).append(m_index)
    return world


# --------------------------------------------------------------- graphs
def entity_triples(world: World) -> tuple[list[str], list[tuple[str, str, str]], dict[str, list[str]]]:
    """(nodes, (head, relation, tail) triples, labels) of the entity graph."""
    nodes: dict[str, None] = {}
    labels: dict[str, list[str]] = {}
    triples: list[tuple[str, str, str]] = []
    for g, genre in enumerate(lx.GENRES):
        nodes[genre_node(g)] = None
        labels[genre_node(g)] = [genre.name, *genre.aliases]
    for person in world.people:
        nodes[person.node] = None
        labels[person.node] = [person.name.lower()]
    for movie in world.movies:
        nodes[movie.node] = None
        labels[movie.node] = [movie.title.rsplit(" (", 1)[0].lower()]
        decade = f"decade:{movie.decade}"
        if decade not in nodes:
            nodes[decade] = None
            labels[decade] = [movie.decade]
        triples += [(movie.node, "has_genre", genre_node(g)) for g in movie.genres]
        triples.append((movie.node, "directed_by", world.people[movie.director].node))
        triples += [(movie.node, "starring", world.people[a].node) for a in movie.actors]
        triples.append((movie.node, "released_in", decade))
        if movie.sequel_of is not None:
            triples.append((movie.node, "sequel_of", world.movies[movie.sequel_of].node))
    return list(nodes), triples, labels


def concept_triples() -> tuple[list[str], list[tuple[str, str, str]]]:
    """(words, triples) of the ConceptNet-like word graph; independent of the seed."""
    triples: list[tuple[str, str, str]] = []
    for genre in lx.GENRES:
        triples += [(genre.word, "IsA", "genre"), (genre.word, "RelatedTo", "movie")]
        triples += [(w, "RelatedTo", genre.word) for w in (*genre.adjectives, *genre.nouns)]
        triples += [(a, "Synonym", b) for a, b in genre.synonyms]
        # adjectives describe the genre's nouns ("spooky" ghosts), linking the two lists
        triples += [(a, "RelatedTo", n) for a, n in zip(genre.adjectives, genre.nouns)]
    triples += [(a, "Synonym", b) for a, b in lx.SENTIMENT_SYNONYMS]
    triples += [(a, "RelatedTo", b) for a, b in lx.CROSS_LINKS]
    triples += [(w, "RelatedTo", "movie") for w in lx.GENERAL_WORDS if w != "movie"]
    triples += [("film", "Synonym", "movie"), ("cinema", "RelatedTo", "film")]
    # plot vocabulary ("asylum", "astronaut", "gunslinger") relates to its genre, as in ConceptNet
    for genre in lx.GENRES:
        for phrase in (*genre.heroes, *genre.quests, *genre.settings):
            triples += [(w, "RelatedTo", genre.word) for w in plot_words(phrase)]
    triples += [(w, "RelatedTo", "good") for w in lx.POSITIVE_WORDS if w != "good"]
    triples += [(w, "RelatedTo", "bad") for w in lx.NEGATIVE_WORDS if w != "bad"]
    words = list(dict.fromkeys(w for h, _, t in triples for w in (h, t)))
    return words, triples


def plot_words(phrase: str) -> list[str]:
    """Content words of a plot phrase (lower-case, no short function words)."""
    return [w for w in re.findall(r"[a-z]+", phrase.lower()) if len(w) > 3 and w not in lx.FUNCTION_WORDS]


def with_article(word: str) -> str:
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


# --------------------------------------------------------------- item texts
def describe(world: World, movie: Movie) -> str:
    """One metadata text per movie: genres, year, people, a templated plot."""
    rng = random.Random(f"demo-meta-{world.seed}-{movie.id}")
    genre = lx.GENRES[movie.genres[0]]
    genre_names = " ".join(lx.GENRES[g].name for g in movie.genres)
    cast = ", ".join(world.people[a].name for a in movie.actors)
    plot = (f"{rng.choice(genre.heroes).capitalize()} {rng.choice(genre.quests)} in {rng.choice(genre.settings)}. "
            f"{with_article(rng.choice(genre.adjectives)).capitalize()} story full of {rng.choice(genre.nouns)}.")
    return (f"{movie.title} is {with_article(genre_names)} film from {movie.year}, directed by "
            f"{world.people[movie.director].name} and starring {cast}. {plot}")


def reviews(world: World, movie: Movie) -> list[str]:
    """1-3 short reviews whose words lean on the movie's genres."""
    rng = random.Random(f"demo-review-{world.seed}-{movie.id}")
    out = []
    for _ in range(rng.randint(1, 3)):
        genre = lx.GENRES[rng.choice(movie.genres)]
        liked = rng.random() < 0.8
        mood = rng.choice(lx.POSITIVE_WORDS if liked else lx.NEGATIVE_WORDS)
        star = world.people[rng.choice(movie.actors)].name
        templates = (
            f"{with_article(mood).capitalize()} {genre.name} movie. "
            f"The {rng.choice(genre.nouns)} were really {rng.choice(genre.adjectives)}.",
            f"{star} is {mood} here. So {rng.choice(genre.adjectives)}, I loved the {rng.choice(genre.nouns)}.",
            f"{'Really' if liked else 'Honestly'} {mood}. If you want something {rng.choice(genre.adjectives)}, "
            f"this is it.",
            f"The plot was {mood} and the {rng.choice(genre.nouns)} felt {rng.choice(genre.adjectives)}.",
        )
        out.append(rng.choice(templates))
    return out
