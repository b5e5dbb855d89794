"""Seeker/recommender dialogues over the demo world.

Each user has a hidden, consistent taste (1-2 genres, maybe a favourite person).
The seeker reveals it bit by bit: liked movies by name, genres by name or through
concept words ("something spooky"), people by name.  The recommender only uses
what was *said*: it scores every unmentioned movie by its knowledge-graph overlap
with the revealed evidence (shared genre / person / sequel) and proposes one of the
best, popularity breaking ties.  So the target is predictable from context + KG
far better than from popularity alone -- the signal the demo models should learn.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from crs.data.schema import RECOMMENDER, SEEKER, Conversation, Mention, Turn

from . import lexicon as lx
from .world import Movie, World, genre_node, with_article


@dataclass(frozen=True)
class Taste:
    genres: tuple[int, ...]
    person: int | None  # favourite actor / director, index into World.people


@dataclass
class _State:
    """What has been said so far: the recommender reasons over this only."""

    liked: list[int] = field(default_factory=list)  # movies the seeker liked / accepted
    mentioned: set[int] = field(default_factory=set)  # every movie named so far
    genres: list[int] = field(default_factory=list)  # genres the seeker asked for
    people: list[int] = field(default_factory=list)  # people the seeker named


def make_tastes(rng: random.Random, world: World, n_users: int, person_share: float = 0.5) -> list[Taste]:
    """Each user's genres and, for about `person_share` of them, a favourite person of those genres."""
    tastes = []
    for _ in range(n_users):
        genres = tuple(rng.sample(range(len(lx.GENRES)), rng.choice((1, 2, 2))))
        in_genre = sorted({p for g in genres for m in world.movies_by_genre.get(g, [])
                           for p in world.movies[m].people if len(world.movies_by_person[p]) >= 2})
        person = rng.choice(in_genre) if in_genre and rng.random() < person_share else None
        tastes.append(Taste(genres, person))
    return tastes


class DialogueWriter:
    """Writes one conversation at a time; all randomness comes from the given rng."""

    def __init__(self, world: World, rng: random.Random, taste_memory: float = 0.0):
        self.world, self.rng = world, rng
        # > 0: the recommender remembers each user's taste (DemoConfig.taste_memory) and leans towards it
        self.taste_memory = taste_memory
        self._taste: Taste | None = None  # the taste of the user being served, when remembered

    # ----------------------------------------------------------- recommender logic
    def _scores(self, state: _State) -> dict[int, float]:
        """KG-overlap score of every unmentioned movie that shares something with the evidence."""
        world, scores = self.world, {}

        def add(movies, weight: float) -> None:
            for m in movies:
                if m not in state.mentioned:
                    scores[m] = scores.get(m, 0.0) + weight

        if self._taste is not None and self._taste.person is not None:
            # a returning user's favourite person, remembered from earlier conversations though not said in this one
            add(world.movies_by_person.get(self._taste.person, ()), self.taste_memory)
        for g in state.genres:
            add(world.movies_by_genre.get(g, ()), 2.0)
        for p in state.people:
            add(world.movies_by_person.get(p, ()), 4.0)
        for liked_index in state.liked:
            liked = world.movies[liked_index]
            for g in liked.genres:
                add(world.movies_by_genre.get(g, ()), 1.0)
            for p in liked.people:
                add(world.movies_by_person.get(p, ()), 3.0)
            add(world.sequels.get(liked_index, ()), 5.0)
            if liked.sequel_of is not None:
                add((liked.sequel_of,), 5.0)
        return scores

    def recommend(self, state: _State, k: int) -> list[int]:
        scores = self._scores(state)
        if not scores:  # nothing revealed: fall back to popular movies
            pool = [i for i in range(len(self.world.movies)) if i not in state.mentioned]
            return self._weighted_sample(pool, k, self._taste)
        best = max(scores.values())
        top = [i for i, s in scores.items() if s >= best - 1.0]
        return self._weighted_sample(top, k, self._taste)

    def _weighted_sample(self, pool: list[int], k: int, taste: Taste | None = None) -> list[int]:
        """`k` movies drawn by popularity; with a remembered `taste`, fitting ones weigh 1 + taste_memory times more."""
        chosen: list[int] = []
        pool = list(pool)
        while pool and len(chosen) < k:
            weights = [self.world.movies[i].popularity for i in pool]
            if taste is not None:
                weights = [w * (1.0 + self.taste_memory) if self.fits(taste, self.world.movies[i]) else w
                           for w, i in zip(weights, pool)]
            pick = self.rng.choices(pool, weights=weights)[0]
            chosen.append(pick)
            pool.remove(pick)
        return chosen

    def _reason(self, state: _State, movie_index: int) -> tuple[str, list[Mention], list[Mention]]:
        """Why `movie_index` fits: a sentence naming the shared person / genre, with its (items, entities)."""
        world, rng = self.world, self.rng
        movie = world.movies[movie_index]
        for liked_index in reversed(state.liked):
            other = world.movies[liked_index]
            if movie.sequel_of == liked_index:
                return f"It's the sequel to {other.title}!", [Mention(other.id, other.title)], []
            shared = [p for p in movie.people if p in other.people]
            if shared:
                person = world.people[shared[0]]
                link = "directed by" if shared[0] == movie.director else "starring"
                return (f"If you liked {other.title}, you'll like this one: it's also {link} {person.name}.",
                        [Mention(other.id, other.title)], [Mention(person.node, person.name)])
        for p in state.people:
            if p in movie.people:
                person = world.people[p]
                return (rng.choice((f"{person.name} is {rng.choice(lx.POSITIVE_WORDS)} in it.",
                                    f"It has {person.name} too.")), [], [Mention(person.node, person.name)])
        shared_genres = [g for g in movie.genres if g in state.genres] or list(movie.genres)
        genre = lx.GENRES[shared_genres[0]]
        roll = rng.random()
        if roll < 0.45:
            return (f"It's {with_article(rng.choice(genre.adjectives))} {genre.name} movie with lots of "
                    f"{rng.choice(genre.nouns)}.", [], [Mention(genre_node(shared_genres[0]), genre.name)])
        if roll < 0.75:
            return (f"It's about {rng.choice(genre.heroes)} who {rng.choice(genre.quests)}. "
                    f"Very {rng.choice(genre.adjectives)}.", [], [])
        return f"It's really {rng.choice(genre.adjectives)}, you won't be disappointed.", [], []

    def recommender_turn(self, state: _State, index: int) -> tuple[Turn, list[int]]:
        """A recommendation (one movie, sometimes two) with a reason; also returns the movie indices."""
        rng = self.rng
        picks = self.recommend(state, 2 if rng.random() < 0.15 else 1)
        movies = [self.world.movies[i] for i in picks]
        names = " or ".join(m.title for m in movies)
        opener = rng.choice(("You should watch {}.", "Have you seen {}?", "I'd recommend {}.",
                             "How about {}?", "You might enjoy {}.", "Try {}."))
        reason, reason_items, entities = self._reason(state, picks[0])
        items = [Mention(m.id, m.title) for m in movies]
        items += [m for m in reason_items if m.id not in {i.id for i in items}]
        state.mentioned.update(picks)
        turn = Turn(index, RECOMMENDER, f"{opener.format(names)} {reason}", items, entities, [m.id for m in movies])
        return turn, picks

    # ----------------------------------------------------------- seeker behaviour
    def reveal(self, taste: Taste, state: _State, kind: str) -> tuple[str, list[Mention], list[Mention]]:
        """A seeker sentence revealing one piece of `taste`; returns (text, items, entities)."""
        world, rng = self.world, self.rng
        if kind == "person" and taste.person is not None and taste.person not in state.people:
            person = world.people[taste.person]
            state.people.append(taste.person)
            verb = "directed by" if person.role == "director" else "with"
            text = rng.choice((f"I'm a big fan of {person.name}.", f"Anything {verb} {person.name}?",
                               f"I really like {person.name}."))
            return text, [], [Mention(person.node, person.name)]
        unstated = [g for g in taste.genres if g not in state.genres]
        if kind in ("genre", "person") and unstated:
            g = rng.choice(unstated)
            genre = lx.GENRES[g]
            state.genres.append(g)
            if rng.random() < 0.6:  # through concept words only: the word graph must do the work
                text = rng.choice((f"I'm in the mood for something {rng.choice(genre.adjectives)}.",
                                   f"Maybe a movie with {rng.choice(genre.nouns)}?",
                                   f"I like {rng.choice(genre.adjectives)} movies "
                                   f"with lots of {rng.choice(genre.nouns)}.",
                                   f"Something {rng.choice(genre.adjectives)} "
                                   f"would be {rng.choice(lx.POSITIVE_WORDS)}."))
                return text, [], []
            text = rng.choice((f"I love {genre.name} movies.", f"Anything {genre.name}?",
                               f"I usually watch {genre.name}, the more {rng.choice(genre.adjectives)} the better."))
            return text, [], [Mention(genre_node(g), genre.name)]
        movie = self._liked_movie(taste, state)
        state.liked.append(movie)
        state.mentioned.add(movie)
        title = world.movies[movie].title
        text = rng.choice((f"I really loved {title}.", f"My favorite movie is {title}.",
                           f"I recently watched {title} and it was {rng.choice(lx.POSITIVE_WORDS)}.",
                           f"Something like {title} would be {rng.choice(lx.POSITIVE_WORDS)}."))
        return text, [Mention(world.movies[movie].id, title)], []

    def _liked_movie(self, taste: Taste, state: _State) -> int:
        world = self.world
        pool = {m for g in taste.genres for m in world.movies_by_genre.get(g, [])}
        if taste.person is not None:
            pool |= set(world.movies_by_person[taste.person])
        candidates = sorted(pool - state.mentioned) or [i for i in range(len(world.movies)) if i not in state.mentioned]
        return self._weighted_sample(candidates, 1)[0]

    def fits(self, taste: Taste, movie: Movie) -> bool:
        return bool(set(movie.genres) & set(taste.genres)) or taste.person in movie.people

    # ----------------------------------------------------------- one conversation
    def conversation(self, conv_id: str, user_id: str, taste: Taste) -> Conversation:
        rng, state, turns = self.rng, _State(), []
        self._taste = taste if self.taste_memory > 0 else None

        def add(role: str, text: str, items=(), entities=(), recommended=()) -> None:
            turns.append(Turn(len(turns), role, text, list(items), list(entities), list(recommended)))

        first = rng.choices(("movie", "genre", "person"), weights=(55, 30, 15))[0]
        if rng.random() < 0.5:
            add(RECOMMENDER, rng.choice(("Hi there! What kind of movie are you looking for?",
                                         "Hello! What are you in the mood for tonight?",
                                         "Hey! Tell me a bit about the movies you like.")))
            text, items, entities = self.reveal(taste, state, first)
            add(SEEKER, f"{rng.choice(('Hi!', 'Hello.', 'Hey.'))} {text}", items, entities)
        else:
            text, items, entities = self.reveal(taste, state, first)
            add(SEEKER, f"{rng.choice(('Hi!', 'Hello,', 'Hey there.'))} I'm looking for a movie to watch. {text}",
                items, entities)
        cold = not state.liked
        for _ in range(rng.randint(2, 3)):
            if rng.random() < 0.15:  # a question instead of a recommendation
                kind, question = rng.choice((("person", "Do you have a favorite actor or director?"),
                                             ("genre", "What genres do you usually enjoy?"),
                                             ("movie", "What's a movie you enjoyed recently?")))
                add(RECOMMENDER, question)
                text, items, entities = self.reveal(taste, state, kind)
                add(SEEKER, text, items, entities)
                continue
            turn, picks = self.recommender_turn(state, len(turns))
            turns.append(turn)
            self._react(taste, state, picks, add)
        add(RECOMMENDER, rng.choice(("Enjoy the movie!", "Have a great movie night!", "Glad I could help, bye!")))
        if len(turns) < 6 or rng.random() < 0.5:
            add(SEEKER, rng.choice(("Thanks, bye!", "Thank you so much!", "Great, thanks for the help.")))
        return Conversation(conv_id, user_id, turns, meta={"taste_genres": [lx.GENRES[g].key for g in taste.genres],
                                                            "cold_start": cold})

    def _react(self, taste: Taste, state: _State, picks: list[int], add) -> None:
        rng, world = self.rng, self.world
        movie = world.movies[picks[0]]
        if self.fits(taste, movie):
            state.liked.append(picks[0])
            if rng.random() < 0.35:
                add(SEEKER, f"Oh, I've seen {movie.title}, it was {rng.choice(lx.POSITIVE_WORDS)}! Anything else?",
                    [Mention(movie.id, movie.title)])
                return
            opener = rng.choice(("That sounds {}, I'll add it to my list.", "Oh, {}! I haven't seen it yet.",
                                 "Sounds {}, thanks."))
            extra = ""
            items: list[Mention] = []
            entities: list[Mention] = []
            if rng.random() < 0.4:
                extra, items, entities = self.reveal(taste, state, rng.choice(("genre", "person", "movie")))
            add(SEEKER, f"{opener.format(rng.choice(lx.POSITIVE_WORDS))} {extra}".strip(), items, entities)
            return
        text, items, entities = self.reveal(taste, state, rng.choice(("genre", "person", "movie")))
        add(SEEKER, f"{rng.choice(('Hmm, not really my thing.', 'I did not like that one much.', 'Not for me.'))} "
                    f"{text}", items, entities)
