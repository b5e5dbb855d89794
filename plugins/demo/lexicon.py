"""Word lists the demo world is generated from.

Every genre carries the concept words a seeker uses to hint at it ("something
spooky") and the plot vocabulary of its metadata and reviews, so that the word
graph (concepts) and the entity graph (genres) both carry real signal.  Plain
data only: the generators in `world.py` / `dialogues.py` decide how it is used.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Genre:
    key: str  # node name suffix: "genre:<key>"
    name: str  # surface name used in text ("science fiction")
    aliases: tuple[str, ...]  # extra surface names for linking ("sci-fi")
    word: str  # the concept-graph node standing for the genre itself
    adjectives: tuple[str, ...]  # "something spooky"
    nouns: tuple[str, ...]  # "a movie with ghosts"
    synonyms: tuple[tuple[str, str], ...]  # Synonym edges among its concept words
    heroes: tuple[str, ...]  # plot protagonists
    quests: tuple[str, ...]  # plot conflicts
    settings: tuple[str, ...]


GENRES: tuple[Genre, ...] = (
    Genre("action", "action", ("action movies",), "action",
          ("explosive", "thrilling", "intense", "fast", "adrenaline"),
          ("explosions", "fights", "chases", "stunts", "guns", "heist", "car"),
          (("explosive", "thrilling"), ("fights", "chases")),
          ("a retired soldier", "an undercover cop", "a getaway driver"),
          ("must stop a bomb plot", "fights a ruthless gang", "races against the clock"),
          ("a burning city", "a speeding train", "the docks of Marseille")),
    Genre("comedy", "comedy", ("comedies",), "comedy",
          ("funny", "hilarious", "silly", "goofy", "witty", "lighthearted"),
          ("laughs", "jokes", "pranks", "gags", "humor"),
          (("funny", "hilarious"), ("silly", "goofy"), ("jokes", "gags")),
          ("two clumsy roommates", "a failed stand-up comic", "a chaotic family"),
          ("try to plan the perfect wedding", "swap lives by accident", "lose a priceless parrot"),
          ("a seaside hotel", "a tiny apartment", "a summer camp")),
    Genre("drama", "drama", ("dramas",), "drama",
          ("emotional", "moving", "touching", "serious", "heartbreaking"),
          ("tears", "grief", "family", "struggle", "loss"),
          (("moving", "touching"), ("grief", "loss")),
          ("a grieving father", "a young teacher", "two estranged sisters"),
          ("rebuild their lives", "face a painful secret", "care for a dying parent"),
          ("a small farming town", "a crowded hospital", "a working class neighborhood")),
    Genre("horror", "horror", ("horror movies", "horror films"), "horror",
          ("scary", "spooky", "creepy", "frightening", "terrifying", "eerie"),
          ("ghosts", "monsters", "zombies", "vampires", "nightmares", "screams"),
          (("scary", "frightening"), ("spooky", "eerie"), ("creepy", "eerie")),
          ("a young family", "a group of campers", "a lonely night nurse"),
          ("are hunted by something in the dark", "awaken an ancient curse", "cannot leave a haunted house"),
          ("an abandoned asylum", "a cabin in the woods", "a fog covered village")),
    Genre("romance", "romance", ("romantic movies", "romantic comedy"), "romance",
          ("romantic", "sweet", "charming", "tender", "passionate"),
          ("love", "kisses", "wedding", "dates", "couples"),
          (("sweet", "charming"), ("love", "passion")),
          ("a shy bookseller", "two rival chefs", "a widowed painter"),
          ("fall in love against all odds", "meet again after ten years", "write letters to a stranger"),
          ("a rainy Paris", "a vineyard in Tuscany", "a busy New York cafe")),
    Genre("scifi", "science fiction", ("sci-fi", "sci fi", "scifi"), "science",
          ("futuristic", "cosmic", "mindbending", "otherworldly"),
          ("space", "aliens", "robots", "spaceships", "planets", "galaxy", "future"),
          (("aliens", "extraterrestrials"), ("spaceships", "starships")),
          ("a stranded astronaut", "an android", "a lone starship captain"),
          ("must make first contact", "travels through a wormhole", "uncovers a robot uprising"),
          ("a distant moon", "a colony on Mars", "a megacity in 2199")),
    Genre("thriller", "thriller", ("thrillers",), "thriller",
          ("suspenseful", "tense", "gripping", "twisty", "dark"),
          ("suspense", "twists", "conspiracy", "stalker", "secrets"),
          (("tense", "gripping"), ("twists", "surprises")),
          ("a paranoid journalist", "a witness", "a hacker"),
          ("uncovers a deadly conspiracy", "is framed for murder", "is followed by a stranger"),
          ("a rainy city", "a remote island", "a locked office tower")),
    Genre("animation", "animation", ("animated movies", "cartoons", "cartoon"), "animation",
          ("animated", "colorful", "cute", "magical", "adorable"),
          ("kids", "cartoons", "talking", "animals", "songs"),
          (("cute", "adorable"), ("kids", "children")),
          ("a brave little fox", "a curious robot", "a young dragon"),
          ("sets out to find its family", "learns to fly", "saves the forest"),
          ("an enchanted forest", "a toy shop", "an underwater kingdom")),
    Genre("fantasy", "fantasy", ("fantasy movies",), "fantasy",
          ("epic", "mythical", "enchanting", "legendary"),
          ("dragons", "wizards", "magic", "swords", "quests", "kingdoms"),
          (("epic", "legendary"), ("wizards", "sorcerers")),
          ("a reluctant wizard", "a farm girl", "an exiled prince"),
          ("must destroy a cursed ring", "seeks a lost crown", "battles an evil sorcerer"),
          ("a mythical kingdom", "the northern mountains", "an elven city")),
    Genre("crime", "crime", ("crime movies", "gangster movies"), "crime",
          ("gritty", "violent", "brutal", "hardboiled"),
          ("gangsters", "mafia", "police", "robbery", "mob", "drugs"),
          (("gangsters", "mobsters"), ("gritty", "hardboiled")),
          ("a veteran detective", "a mob accountant", "two small time crooks"),
          ("plan one last robbery", "take down a crime family", "hide stolen money"),
          ("1970s Chicago", "the streets of Naples", "a border town")),
    Genre("western", "western", ("westerns", "cowboy movies"), "western",
          ("dusty", "rugged", "lawless", "wild"),
          ("cowboys", "horses", "outlaws", "sheriff", "desert", "saloon"),
          (("cowboys", "ranchers"), ("outlaws", "bandits")),
          ("a lone gunslinger", "a young sheriff", "a widowed rancher"),
          ("defends a frontier town", "hunts a band of outlaws", "drives cattle across the plains"),
          ("the Texas frontier", "a gold rush town", "the Arizona desert")),
    Genre("mystery", "mystery", ("mysteries", "whodunit"), "mystery",
          ("mysterious", "puzzling", "clever", "intriguing"),
          ("detective", "clues", "murder", "puzzle", "investigation"),
          (("mysterious", "puzzling"), ("detective", "sleuth")),
          ("an eccentric detective", "a retired schoolteacher", "a young reporter"),
          ("solves a murder on a train", "investigates a vanished heiress", "follows a trail of clues"),
          ("an English country manor", "a snowed in lodge", "a seaside village")),
)

# Words that tie the genre words together in the concept graph (IsA genre, RelatedTo movie, ...).
GENERAL_WORDS = (
    "movie", "film", "genre", "watch", "story", "plot", "actor", "actress", "director", "character",
    "ending", "music", "scene", "cast", "classic", "night", "weekend", "friends", "date", "fun",
    "cinema", "sequel", "series", "performance", "acting", "script", "soundtrack", "twist", "hero",
    "villain", "adventure", "journey", "battle", "war", "history", "city", "house", "death", "fear",
    "joy", "laugh", "cry", "kiss", "heart", "mind", "world", "star", "dark", "light", "mood", "favorite",
    "tonight", "popcorn", "theater", "screen", "directed", "starring", "recommend", "loved", "enjoyed",
    "watched", "seen", "book", "novel", "remake", "trilogy", "award", "oscar", "festival", "indie",
    "blockbuster", "budget", "effects", "costume", "animation", "dialogue", "camera", "story", "ending",
)
# Sentiment words used by seekers and reviews; Synonym / Antonym pairs among them.
POSITIVE_WORDS = ("great", "amazing", "wonderful", "awesome", "fantastic", "brilliant", "excellent",
                  "superb", "good", "nice", "beautiful", "perfect", "fun", "enjoyable", "memorable")
NEGATIVE_WORDS = ("boring", "dull", "slow", "bad", "awful", "terrible", "forgettable", "weak")
SENTIMENT_SYNONYMS = (("great", "awesome"), ("amazing", "fantastic"), ("wonderful", "beautiful"),
                      ("brilliant", "excellent"), ("boring", "dull"), ("awful", "terrible"), ("bad", "weak"))
# Cross-genre associations that make the concept graph less tree-like.
CROSS_LINKS = (("dark", "horror"), ("dark", "thriller"), ("laugh", "comedy"), ("cry", "drama"),
               ("kiss", "romance"), ("heart", "romance"), ("fear", "horror"), ("adventure", "fantasy"),
               ("adventure", "action"), ("battle", "action"), ("war", "action"), ("hero", "action"),
               ("villain", "crime"), ("twist", "thriller"), ("twist", "mystery"), ("murder", "crime"),
               ("police", "mystery"), ("kids", "comedy"), ("magic", "animation"), ("death", "drama"),
               ("joy", "comedy"), ("history", "western"), ("star", "science"), ("world", "fantasy"),
               ("suspense", "mystery"), ("monsters", "fantasy"), ("robots", "animation"))

FIRST_NAMES = ("James", "Maria", "Robert", "Elena", "Michael", "Sofia", "David", "Anna", "Thomas", "Laura",
               "Daniel", "Grace", "Samuel", "Nina", "Victor", "Clara", "Oscar", "Julia", "Hugo", "Iris",
               "Leon", "Maya", "Felix", "Rosa", "Arthur", "Lena", "Martin", "Vera", "Simon", "Alice",
               "Peter", "Helen", "Frank", "Emma", "Paul", "Ruth", "Carl", "Diana", "Walter", "Nora")
LAST_NAMES = ("Hartley", "Moreno", "Lindqvist", "Okafor", "Brennan", "Castellano", "Whitaker", "Novak",
              "Ashford", "Delacroix", "Kowalski", "Fairbanks", "Marchetti", "Holloway", "Sorensen", "Vance",
              "Abernathy", "Quinlan", "Ferreira", "Blackwood", "Takeda", "Rourke", "Ellison", "Mercer",
              "Valentine", "Draper", "Lockhart", "Santoro", "Pemberton", "Calloway", "Hargrove", "Ibsen",
              "Montague", "Radcliffe", "Stroud", "Winslow", "Yardley", "Zellner", "Gallagher", "Prescott")

TITLE_ADJECTIVES = ("Silent", "Last", "Broken", "Hidden", "Golden", "Crimson", "Lonely", "Endless", "Frozen",
                    "Burning", "Forgotten", "Wild", "Bright", "Hollow", "Secret", "Distant", "Midnight",
                    "Iron", "Velvet", "Restless", "Scarlet", "Quiet", "Savage", "Eternal", "Fading", "Lucky",
                    "Northern", "Glass", "Paper", "Shattered")
TITLE_NOUNS = ("Harbor", "River", "Kingdom", "Shadow", "Garden", "Highway", "Storm", "Mirror", "Lantern",
               "Horizon", "Echo", "Orchard", "Tower", "Promise", "Voyage", "Frontier", "Carnival", "Signal",
               "Island", "Winter", "Summer", "Crown", "Letter", "Empire", "Canyon", "Forest", "Engine",
               "Compass", "Station", "Dream", "Heart", "Witness", "Stranger", "Machine", "Valley")
TITLE_PATTERNS = ("The {adj} {noun}", "{adj} {noun}", "The {noun} of {noun2}", "{noun} {noun2}",
                  "A {adj} {noun}", "Beyond the {noun}")

# Skipped when plot phrases are mined for concept words.
FUNCTION_WORDS = frozenset(("must", "with", "from", "into", "their", "after", "against", "across", "through",
                            "before", "something", "lives", "sets", "last", "young", "little", "small", "lone",
                            "find", "face", "follows", "with", "makes", "cannot", "leave", "plan", "take",
                            "hide", "meet", "again", "years", "learns", "seeks", "each", "other"))
