"""How much a demo-users test user's earlier conversations tell about their later ones (registry.yaml, demo-users).

For each test user, the support is the first half of their conversations and the query the rest (as
user-adapt-v1 splits them).  Prints the share of query recommendations that star or were directed by the person
most often in the user's support recommendations, for a few taste settings: what per-user adaptation can find.

    python benchmarks/demo_user_signal.py
"""
from __future__ import annotations

import collections

from crs.plugins.demo.corpus import DemoConfig, _world, demo_corpus


def support_person_share(config: DemoConfig) -> tuple[float, int]:
    corpus, world = demo_corpus(config), _world(config)
    movies = {m.id: m for m in world.movies}
    by_user = collections.defaultdict(list)
    for conv in corpus.splits["test"]:
        by_user[conv.user_id].append(conv)
    hits = total = 0
    for convs in by_user.values():
        support, query = convs[:len(convs) // 2], convs[len(convs) // 2:]
        people = collections.Counter(p for c in support for t in c.turns for i in t.recommended
                                     for p in movies[i].people)
        if not people:
            continue
        top = people.most_common(1)[0][0]
        for item in (i for c in query for t in c.turns for i in t.recommended):
            total += 1
            hits += top in movies[item].people
    return hits / total, len(by_user)


def main() -> None:
    print("taste_memory  favourite_person_share  test users  query recs featuring the support's top person")
    for memory, share in ((0.0, 0.5), (2.0, 0.5), (6.0, 0.5), (6.0, 1.0)):
        value, users = support_person_share(DemoConfig(disjoint_test_users=True, taste_memory=memory,
                                                       favourite_person_share=share))
        print(f"{memory:12.1f}  {share:22.1f}  {users:10d}  {value:.3f}")


if __name__ == "__main__":
    main()
